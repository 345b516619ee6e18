package attachment_test

// The S3 store against an S3 server in the test process (internal/s3test,
// gofakes3). What that does not prove is listed on attachment.S3.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/karlmalone/karlmalone/attachment"
	"github.com/karlmalone/karlmalone/internal/s3test"
)

func TestS3StageCommitOpen(t *testing.T) {
	t.Parallel()
	srv := s3test.New(t)
	cfg := srv.Config(t)
	s, err := attachment.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prepare(t.Context(), time.Hour, time.Now()); err != nil || n != 0 {
		t.Fatalf("prepare: %d, %v", n, err)
	}
	content := bytes.Repeat([]byte("karlmalone "), 100_000) // 1.1 MB
	st, err := s.Stage(bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatalf("stage exactly the limit: %v", err)
	}
	want := attachment.Blob{Sum: sha256.Sum256(content), Size: int64(len(content))}
	if st.Blob() != want {
		t.Fatalf("blob %+v, want %+v", st.Blob(), want)
	}
	if _, err := s.Open(want.Sum); !errors.Is(err, attachment.ErrNotFound) {
		t.Fatalf("open before commit: %v, want ErrNotFound", err)
	}
	if keys := srv.Keys(t); len(keys) != 0 {
		t.Fatalf("staging reached the bucket: %v", keys)
	}
	if err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := st.Discard(); err != nil {
		t.Fatalf("discard after commit: %v", err)
	}
	if keys := srv.Keys(t); !slices.Equal(keys, []string{"blobs/" + want.Sum.String()}) {
		t.Fatalf("keys %v", keys)
	}
	if fs := files(t, cfg.SpoolDir); len(fs) != 0 {
		t.Fatalf("spool kept %v", fs)
	}

	// Another node's store reads it, whole and in ranges (http.ServeContent
	// seeks to the end for the size, then to the range).
	f, err := srv.Store(t).Open(want.Sum)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, _ := io.ReadAll(f); !bytes.Equal(got, content) {
		t.Fatal("stored content differs")
	}
	if n, err := f.Seek(0, io.SeekEnd); err != nil || n != want.Size {
		t.Fatalf("seek to end: %d, %v", n, err)
	}
	if _, err := f.Seek(500_001, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	part := make([]byte, 10)
	if _, err := io.ReadFull(f, part); err != nil || !bytes.Equal(part, content[500_001:500_011]) {
		t.Fatalf("ranged read %q, %v", part, err)
	}

	// The same bytes again: one object, nothing spooled.
	st2, err := s.Stage(bytes.NewReader(content), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.Commit(); err != nil {
		t.Fatal(err)
	}
	if keys := srv.Keys(t); len(keys) != 1 {
		t.Fatalf("keys after a duplicate %v", keys)
	}
	if fs := files(t, cfg.SpoolDir); len(fs) != 0 {
		t.Fatalf("spool kept %v", fs)
	}
}

// Uploads that fail or are dropped reach neither the bucket nor stay in the spool.
func TestS3FailedUploadsLeaveNothing(t *testing.T) {
	t.Parallel()
	srv := s3test.New(t)
	cfg := srv.Config(t)
	s, err := attachment.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stage(bytes.NewReader(make([]byte, 1001)), 1000); !errors.Is(err, attachment.ErrTooLarge) {
		t.Errorf("got %v, want ErrTooLarge", err)
	}
	if _, err := s.Stage(&brokenReader{n: 100_000}, 1<<20); !errors.Is(err, errCut) {
		t.Errorf("got %v, want the reader's error", err)
	}
	st, err := s.Stage(bytes.NewReader([]byte("hello")), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Discard(); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(); err == nil {
		t.Error("commit after discard succeeded")
	}
	if keys, fs := srv.Keys(t), files(t, cfg.SpoolDir); len(keys)+len(fs) != 0 {
		t.Errorf("left %v in the bucket and %v in the spool", keys, fs)
	}
}

// Prepare fails at startup on a bucket that is not there, and sweeps what a
// crash left in the spool.
func TestS3Prepare(t *testing.T) {
	t.Parallel()
	srv := s3test.New(t)
	cfg := srv.Config(t)
	cfg.Bucket = "nope"
	missing, err := attachment.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := missing.Prepare(t.Context(), time.Hour, time.Now()); err == nil {
		t.Error("prepare with a missing bucket succeeded")
	}

	cfg = srv.Config(t)
	s, err := attachment.NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stage(bytes.NewReader([]byte("crash")), 0); err != nil { // never committed nor discarded
		t.Fatal(err)
	}
	if n, err := s.Prepare(context.Background(), time.Hour, time.Now().Add(2*time.Hour)); err != nil || n != 1 {
		t.Fatalf("prepare removed %d (%v), want 1", n, err)
	}
	if fs := files(t, cfg.SpoolDir); len(fs) != 0 {
		t.Fatalf("left %v", fs)
	}

	for _, bad := range []attachment.S3Config{{Bucket: "b"}, {Endpoint: "x"}, {Endpoint: "ftp://x", Bucket: "b"}, {Endpoint: "https://x/path", Bucket: "b"}} {
		if _, err := attachment.NewS3(bad); err == nil {
			t.Errorf("NewS3(%+v) succeeded", bad)
		}
	}
}
