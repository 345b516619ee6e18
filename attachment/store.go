// Package attachment stores uploaded files by the SHA-256 of their content:
// storage only. The HTTP routes that upload and serve them
// (POST /v1/attachments, GET /v1/attachments/{id}) live beside the other
// handlers, in server/attachment.go.
//
// Storage is two-phase: Stage streams an upload into the store while hashing
// it, without making it visible, and Commit publishes it under its hash. The
// upload handler commits inside the transaction that inserts the attachment
// row, so a row never names content that is not there, and an upload that
// fails or is cut off leaves neither a file nor a row. FS keeps the blobs in
// a local directory; any Store with these semantics can replace it. See
// docs/ARCHITECTURE.md for where it sits.
package attachment

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Errors of a Store.
var (
	ErrTooLarge = errors.New("attachment: content larger than the limit")
	ErrNotFound = errors.New("attachment: content not found")
)

// Sum is the SHA-256 of a blob's content: its address in the store.
type Sum [sha256.Size]byte

// String is the sum in lowercase hex.
func (s Sum) String() string { return hex.EncodeToString(s[:]) }

// SumOf converts a stored digest (the attachments.sha256 column).
func SumOf(b []byte) (Sum, error) {
	var s Sum
	if len(b) != len(s) {
		return s, fmt.Errorf("attachment: digest of %d bytes, want %d", len(b), len(s))
	}
	copy(s[:], b)
	return s, nil
}

// Blob describes staged or stored content.
type Blob struct {
	Sum  Sum
	Size int64
}

// Store keeps blobs by content.
type Store interface {
	// Stage copies r into the store, hashing it on the way, without making it
	// visible. Past limit bytes (limit > 0) it stops with ErrTooLarge; on any
	// error nothing is left behind.
	Stage(r io.Reader, limit int64) (Staged, error)
	// Open returns the content stored under sum, or an error wrapping ErrNotFound.
	Open(sum Sum) (io.ReadSeekCloser, error)
	// Delete removes the content stored under sum (garbage collection, once
	// no row names it); content already gone is not an error.
	Delete(sum Sum) error
}

// Staged is content written to the store but not yet visible in it.
type Staged interface {
	Blob() Blob
	// Commit makes the content visible under its sum. Identical content
	// already stored is kept: the bytes are the same.
	Commit() error
	// Discard drops content that was not committed. It does nothing after
	// Commit, so it can be deferred.
	Discard() error
}

// FS is a Store in a directory of the local filesystem: each blob is a file
// named by its hex sum, under a subdirectory named by the sum's first two
// hex digits (so no directory grows past 1/256 of the blobs). Uploads in
// progress are hidden files (".upload-*") in the top directory, on the same
// filesystem as their final place, so publishing one is an atomic rename.
type FS struct {
	dir string
	// spool: the files are only a stop on the way to another store (S3),
	// which keeps them durably; staging skips the fsync.
	spool bool
	// made is set once dir exists, to skip the MkdirAll on every upload.
	made sync.Once
	err  error
}

var _ Store = (*FS)(nil)

// tempPrefix marks uploads in progress; Prepare removes stale ones.
const tempPrefix = ".upload-"

// NewFS returns a store rooted at dir. It touches nothing on disk until the
// first upload (or Prepare).
func NewFS(dir string) *FS { return &FS{dir: dir} }

func (s *FS) mkdir() error {
	s.made.Do(func() {
		if err := os.MkdirAll(s.dir, 0o750); err != nil {
			s.err = fmt.Errorf("attachment: create store directory: %w", err)
		}
	})
	return s.err
}

// Prepare creates the store's directory and removes uploads left in progress
// longer than maxAge ago (by a crash: a live upload cleans up after itself).
// Call it at startup so that a directory the server cannot write to fails
// then, not at the first upload. It returns how many files it removed.
func (s *FS) Prepare(maxAge time.Duration, now time.Time) (int, error) {
	if err := s.mkdir(); err != nil {
		return 0, err
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, fmt.Errorf("attachment: read store directory: %w", err)
	}
	removed := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || now.Sub(info.ModTime()) < maxAge {
			continue // gone already, or perhaps another process's live upload
		}
		if err := os.Remove(filepath.Join(s.dir, e.Name())); err == nil {
			removed++
		}
	}
	return removed, nil
}

func (s *FS) path(sum Sum) string {
	h := sum.String()
	return filepath.Join(s.dir, h[:2], h)
}

// Stage writes r to a temporary file, fsyncs it and returns it unpublished.
func (s *FS) Stage(r io.Reader, limit int64) (Staged, error) {
	if err := s.mkdir(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.dir, tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("attachment: create temporary file: %w", err)
	}
	st := &fsStaged{store: s, tmp: f.Name()}
	fail := func(err error) (Staged, error) {
		f.Close()
		os.Remove(st.tmp)
		return nil, err
	}
	h := sha256.New()
	src := r
	if limit > 0 {
		// One byte more than allowed tells "exactly limit" from "too large".
		src = io.LimitReader(r, limit+1)
	}
	n, err := io.Copy(f, &hashingReader{r: src, h: h})
	if err != nil {
		return fail(err) // the reader's error as is: the caller tells a broken upload from a full disk
	}
	if limit > 0 && n > limit {
		return fail(ErrTooLarge)
	}
	// Durable before it becomes visible: a crash after Commit must not leave
	// a published name pointing at missing bytes.
	if !s.spool {
		if err := f.Sync(); err != nil {
			return fail(fmt.Errorf("attachment: sync temporary file: %w", err))
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(st.tmp)
		return nil, fmt.Errorf("attachment: close temporary file: %w", err)
	}
	copy(st.blob.Sum[:], h.Sum(nil))
	st.blob.Size = n
	return st, nil
}

// hashingReader hashes what it reads. Errors from r pass through unwrapped
// so callers can tell them from the store's own.
type hashingReader struct {
	r io.Reader
	h hash.Hash
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	return n, err
}

// Open opens the blob stored under sum.
func (s *FS) Open(sum Sum) (io.ReadSeekCloser, error) {
	f, err := os.Open(s.path(sum))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, sum)
	}
	if err != nil {
		return nil, fmt.Errorf("attachment: open %s: %w", sum, err)
	}
	return f, nil
}

// Delete removes the blob stored under sum. A reader that has it open
// keeps reading it to its end.
func (s *FS) Delete(sum Sum) error {
	if err := os.Remove(s.path(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("attachment: delete %s: %w", sum, err)
	}
	return nil
}

type fsStaged struct {
	store *FS
	tmp   string // "" once committed or discarded
	blob  Blob
}

func (st *fsStaged) Blob() Blob { return st.blob }

func (st *fsStaged) Commit() error {
	if st.tmp == "" {
		return errors.New("attachment: commit after commit or discard")
	}
	final := st.store.path(st.blob.Sum)
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("attachment: create %s: %w", dir, err)
	}
	if _, err := os.Stat(final); err == nil {
		// Same sum, same bytes: keep the stored file, drop ours.
		return st.Discard()
	}
	if err := os.Rename(st.tmp, final); err != nil {
		return fmt.Errorf("attachment: publish %s: %w", st.blob.Sum, err)
	}
	st.tmp = ""
	// The rename is durable only once the directories holding the old and
	// the new name are synced.
	if err := syncDir(dir); err != nil {
		return err
	}
	return syncDir(st.store.dir)
}

func (st *fsStaged) Discard() error {
	if st.tmp == "" {
		return nil
	}
	err := os.Remove(st.tmp)
	st.tmp = ""
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("attachment: remove temporary file: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("attachment: open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("attachment: sync %s: %w", dir, err)
	}
	return nil
}
