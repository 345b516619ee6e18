package attachment_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/karlmalone/karlmalone/attachment"
)

// files lists every regular file under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

func TestFSStageCommitOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := attachment.NewFS(dir)
	content := bytes.Repeat([]byte("karlmalone "), 10_000)

	st, err := s.Stage(bytes.NewReader(content), int64(len(content)))
	if err != nil {
		t.Fatalf("stage exactly the limit: %v", err)
	}
	want := attachment.Blob{Sum: sha256.Sum256(content), Size: int64(len(content))}
	if st.Blob() != want {
		t.Fatalf("blob %+v, want %+v", st.Blob(), want)
	}
	// Staged content is invisible until committed.
	if _, err := s.Open(want.Sum); !errors.Is(err, attachment.ErrNotFound) {
		t.Fatalf("open before commit: %v, want ErrNotFound", err)
	}
	if err := st.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := st.Discard(); err != nil {
		t.Fatalf("discard after commit: %v", err)
	}
	f, err := s.Open(want.Sum)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, content) {
		t.Fatal("stored content differs")
	}
	h := want.Sum.String()
	if fs := files(t, dir); len(fs) != 1 || fs[0] != filepath.Join(h[:2], h) {
		t.Fatalf("files %v, want only %s/%s", fs, h[:2], h)
	}

	// The same bytes again: one file, still readable.
	st2, err := s.Stage(bytes.NewReader(content), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.Commit(); err != nil {
		t.Fatal(err)
	}
	if fs := files(t, dir); len(fs) != 1 {
		t.Fatalf("files after a duplicate %v, want one", fs)
	}
}

func TestFSStageTooLargeLeavesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := attachment.NewFS(dir)
	_, err := s.Stage(bytes.NewReader(make([]byte, 1001)), 1000)
	if !errors.Is(err, attachment.ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if fs := files(t, dir); len(fs) != 0 {
		t.Fatalf("left %v behind", fs)
	}
}

// brokenReader yields some bytes and then fails, like a body cut off.
type brokenReader struct{ n int }

var errCut = errors.New("connection reset")

func (b *brokenReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errCut
	}
	n := min(len(p), b.n)
	b.n -= n
	return n, nil
}

func TestFSStageReadErrorLeavesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := attachment.NewFS(dir)
	_, err := s.Stage(&brokenReader{n: 100_000}, 1<<20)
	if !errors.Is(err, errCut) {
		t.Fatalf("got %v, want the reader's error", err)
	}
	if fs := files(t, dir); len(fs) != 0 {
		t.Fatalf("left %v behind", fs)
	}
}

func TestFSDiscard(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := attachment.NewFS(dir)
	st, err := s.Stage(bytes.NewReader([]byte("hello")), 0)
	if err != nil {
		t.Fatal(err)
	}
	if fs := files(t, dir); len(fs) != 1 {
		t.Fatalf("staged files %v, want one temporary file", fs)
	}
	if err := st.Discard(); err != nil {
		t.Fatal(err)
	}
	if fs := files(t, dir); len(fs) != 0 {
		t.Fatalf("left %v behind", fs)
	}
	if err := st.Commit(); err == nil {
		t.Fatal("commit after discard succeeded")
	}
}

func TestFSPrepareRemovesStaleUploads(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "store")
	s := attachment.NewFS(dir)
	if _, err := s.Prepare(time.Hour, time.Now()); err != nil {
		t.Fatalf("prepare a new directory: %v", err)
	}
	// Two uploads staged and never committed nor discarded, as after a crash.
	for _, b := range []string{"one", "two"} {
		if _, err := s.Stage(bytes.NewReader([]byte(b)), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Fresh ones may be live uploads of another process: kept.
	if n, err := s.Prepare(time.Hour, time.Now()); err != nil || n != 0 {
		t.Fatalf("prepare now removed %d (%v), want 0", n, err)
	}
	if n, err := s.Prepare(time.Hour, time.Now().Add(2*time.Hour)); err != nil || n != 2 {
		t.Fatalf("prepare two hours later removed %d (%v), want 2", n, err)
	}
	if fs := files(t, dir); len(fs) != 0 {
		t.Fatalf("left %v behind", fs)
	}
}
