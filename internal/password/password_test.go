package password_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/karlmalone/karlmalone/internal/password"
)

func TestHashAndVerify(t *testing.T) {
	t.Parallel()
	h := password.NewHasher(password.DefaultParams, 2)
	ctx := t.Context()
	hash, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q does not carry the OWASP parameters", hash)
	}
	for pw, want := range map[string]bool{"correct horse": true, "correct hors": false, "": false} {
		ok, err := h.Verify(ctx, pw, hash)
		if err != nil || ok != want {
			t.Fatalf("Verify(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	// An unknown member (empty hash) never verifies, even with the dummy's password.
	if ok, err := h.Verify(ctx, "karlmalone-dummy-password", ""); ok || err != nil {
		t.Fatalf("Verify against no hash = %v, %v", ok, err)
	}
}

// TestWaitingForASlotHonoursTheContext: with every slot taken, a caller whose
// context ends gets its error instead of queueing forever.
func TestWaitingForASlotHonoursTheContext(t *testing.T) {
	t.Parallel()
	h := password.NewHasher(password.InsecureFastParams, 1)
	release := h.Hold() // take the only slot
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.Hash(ctx, "pw"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Hash with no free slot and a canceled context = %v", err)
	}
	release()
	if _, err := h.Hash(t.Context(), "pw"); err != nil {
		t.Fatalf("Hash once the slot is free: %v", err)
	}
}

// BenchmarkHash is the cost of one production hash (OWASP minimum parameters).
//
//	go test -run '^$' -bench Hash -benchtime 50x ./internal/password/
func BenchmarkHash(b *testing.B) {
	h := password.NewHasher(password.DefaultParams, 1)
	for b.Loop() {
		if _, err := h.Hash(context.Background(), "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
