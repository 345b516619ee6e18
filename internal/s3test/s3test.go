// Package s3test runs an S3-compatible server (gofakes3, in memory) inside
// the test process. See attachment/s3.go for what a test against it does
// not prove.
package s3test

import (
	"net/http/httptest"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/karlmalone/karlmalone/attachment"
)

// Server is a fake S3 with one bucket.
type Server struct {
	URL    string // http://127.0.0.1:port
	Bucket string
	// Backend holds the objects, for tests that look behind the API.
	Backend *s3mem.Backend
}

// New starts a server with an empty bucket named "attachments"; it stops when
// the test ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	backend := s3mem.New()
	const bucket = "attachments"
	if err := backend.CreateBucket(bucket); err != nil {
		tb.Fatalf("s3test: create bucket: %v", err)
	}
	srv := httptest.NewServer(gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	tb.Cleanup(srv.Close)
	return &Server{URL: srv.URL, Bucket: bucket, Backend: backend}
}

// Config is how a store reaches the server, spooling under a test directory.
func (s *Server) Config(tb testing.TB) attachment.S3Config {
	return attachment.S3Config{
		Endpoint:  s.URL,
		Bucket:    s.Bucket,
		Prefix:    "blobs/",
		AccessKey: "test",
		SecretKey: "test-secret",
		PathStyle: true,
		SpoolDir:  tb.TempDir(),
	}
}

// Store is a new store on the server.
func (s *Server) Store(tb testing.TB) *attachment.S3 {
	tb.Helper()
	st, err := attachment.NewS3(s.Config(tb))
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// Keys lists the keys in the bucket.
func (s *Server) Keys(tb testing.TB) []string {
	tb.Helper()
	list, err := s.Backend.ListBucket(s.Bucket, nil, gofakes3.ListBucketPage{})
	if err != nil {
		tb.Fatalf("s3test: list bucket: %v", err)
	}
	var keys []string
	for _, c := range list.Contents {
		keys = append(keys, c.Key)
	}
	return keys
}
