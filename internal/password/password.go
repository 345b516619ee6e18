// Package password hashes and checks member passwords with argon2id, bounding
// how many hashes run at once: each costs Params.Memory KiB, so a login storm
// queues instead of exhausting memory.
package password

import (
	"context"
	"fmt"
	"runtime"

	"github.com/alexedwards/argon2id"
)

// OWASP's minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
var DefaultParams = argon2id.Params{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// InsecureFastParams are for load tests and benchmarks only, enabled by an
// explicit server flag: they make registering thousands of members cheap.
var InsecureFastParams = argon2id.Params{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// Hasher hashes and verifies passwords with at most Concurrency at a time.
type Hasher struct {
	params argon2id.Params
	sem    chan struct{}
	dummy  string // a real hash, verified against when a phone is unknown
}

// NewHasher returns a Hasher; concurrency <= 0 means GOMAXPROCS.
func NewHasher(params argon2id.Params, concurrency int) *Hasher {
	if concurrency <= 0 {
		concurrency = runtime.GOMAXPROCS(0)
	}
	h := &Hasher{params: params, sem: make(chan struct{}, concurrency)}
	dummy, err := argon2id.CreateHash("karlmalone-dummy-password", &h.params)
	if err != nil {
		panic(fmt.Sprintf("password: create dummy hash: %v", err)) // only fails if crypto/rand fails
	}
	h.dummy = dummy
	return h
}

// Hash returns the encoded argon2id hash of pw, waiting for a free slot.
func (h *Hasher) Hash(ctx context.Context, pw string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	hash, err := argon2id.CreateHash(pw, &h.params)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return hash, nil
}

// Verify reports whether pw matches hash. An empty hash (unknown member) is
// checked against a dummy hash so both cases take the same time.
func (h *Hasher) Verify(ctx context.Context, pw, hash string) (bool, error) {
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	known := hash != ""
	if !known {
		hash = h.dummy
	}
	ok, err := argon2id.ComparePasswordAndHash(pw, hash)
	if err != nil {
		return false, fmt.Errorf("verify password: %w", err)
	}
	return ok && known, nil
}

// NeedsRehash reports whether hash was made with weaker parameters than the
// Hasher's (less memory, fewer iterations or lanes, a shorter key or salt),
// so Login can replace it while it holds the password. A hash it cannot read
// is left alone: Verify has already failed on it.
func (h *Hasher) NeedsRehash(hash string) bool {
	p, _, _, err := argon2id.DecodeHash(hash)
	if err != nil {
		return false
	}
	return p.Memory < h.params.Memory || p.Iterations < h.params.Iterations || p.Parallelism < h.params.Parallelism ||
		p.KeyLength < h.params.KeyLength || p.SaltLength < h.params.SaltLength
}

// Hold takes a slot until release is called: for tests of the bound.
func (h *Hasher) Hold() (release func()) {
	h.sem <- struct{}{}
	return h.release
}

func (h *Hasher) acquire(ctx context.Context) error {
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Hasher) release() { <-h.sem }
