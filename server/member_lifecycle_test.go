package server_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"

	"github.com/karlmalone/karlmalone/gen/db"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/internal/password"
	"github.com/karlmalone/karlmalone/server"
)

// TestLoginRehashesWeakerHash: a password hashed with lower argon2id
// parameters than the server's is re-hashed with the server's at the next
// login, and the member logs in with it after.
func TestLoginRehashesWeakerHash(t *testing.T) {
	t.Parallel()
	old := newEnv(t) // the harness hasher: password.InsecureFastParams
	m := old.register(t, "veteran")
	stored := func() *argon2id.Params {
		t.Helper()
		row, err := db.New(old.Pool).GetMemberByPhone(t.Context(), m.Phone)
		if err != nil {
			t.Fatal(err)
		}
		p, _, _, err := argon2id.DecodeHash(row.PasswordHash)
		if err != nil {
			t.Fatalf("stored hash %q: %v", row.PasswordHash, err)
		}
		return p
	}
	low := password.InsecureFastParams
	if p := stored(); p.Memory != low.Memory || p.Iterations != low.Iterations {
		t.Fatalf("registered with %+v, want the low parameters %+v", p, low)
	}
	// The same database, served with stronger parameters (cheap enough for a test).
	high := low
	high.Memory, high.Iterations = 2*low.Memory, low.Iterations+1
	upgraded := newEnv(t, withPool(old.Pool), withHasher(password.NewHasher(high, 0)))
	upgraded.login(t, m.Phone, m.Password)
	if p := stored(); p.Memory != high.Memory || p.Iterations != high.Iterations {
		t.Fatalf("after login the stored hash has %+v, want %+v", p, high)
	}
	if !strings.Contains(upgraded.Logs.String(), "password rehashed") {
		t.Errorf("no log of the rehash")
	}
	// The new hash holds the same password; a hash as strong stays as it is.
	upgraded.login(t, m.Phone, m.Password)
	if strings.Count(upgraded.Logs.String(), "password rehashed") != 1 {
		t.Errorf("rehashed again a hash with the current parameters")
	}
}

// TestSweepExpiredSessions: the sweep deletes expired sessions, no more than
// its bound per run, and leaves live ones.
func TestSweepExpiredSessions(t *testing.T) {
	t.Parallel()
	// Tokens that live a nanosecond: every session of this server is expired.
	short := newEnv(t, withConfig(func(c *server.Config) { c.TokenTTL = time.Nanosecond }))
	a := short.register(t, "a")
	for range 4 {
		short.login(t, a.Phone, a.Password)
	}
	// Live sessions of another member, in the same database.
	long := newEnv(t, withPool(short.Pool))
	b := long.register(t, "b")
	long.login(t, b.Phone, b.Password)
	count := func(where string) int { return len(short.dbRows(t, "sessions", where)) }
	if count("expires_at <= now()") != 5 || count("expires_at > now()") != 2 {
		t.Fatalf("sessions before the sweep: %d expired, %d live", count("expires_at <= now()"), count("expires_at > now()"))
	}
	// Batches of 2, at most 2 of them: 4 of the 5 this run.
	n, err := server.SweepExpiredSessions(t.Context(), short.Pool, 2, 2)
	if err != nil || n != 4 {
		t.Fatalf("first run deleted %d (%v), want 4", n, err)
	}
	n, err = server.SweepExpiredSessions(t.Context(), short.Pool, 2, 2)
	if err != nil || n != 1 {
		t.Fatalf("second run deleted %d (%v), want the last 1", n, err)
	}
	if count("true") != 2 {
		t.Fatalf("%d sessions left, want b's 2 live ones", count("true"))
	}
	if _, err := b.Members.GetMe(t.Context(), &v1.GetMeRequest{}); err != nil {
		t.Fatalf("a live session after the sweep: %v", err)
	}

	// The periodic sweep does the same by itself, and stops with its context.
	short.login(t, a.Phone, a.Password)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		server.SweepSessions(ctx, short.Pool, slog.New(slog.DiscardHandler), time.Millisecond)
	}()
	waitFor(t, "the periodic sweep", func() bool { return count("expires_at <= now()") == 0 })
	cancel()
	<-done
}
