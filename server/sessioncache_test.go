package server_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/internal/testdb"
	"github.com/karlmalone/karlmalone/server"
)

// Logout through node B: the token is refused by RPCs on A and C as soon as
// they hear the revocation, although both had it cached (a cache that missed
// the broadcast would answer from memory for its whole TTL).
func TestClusterLogoutRefusesCachedTokenEverywhere(t *testing.T) {
	t.Parallel()
	cl := newCluster(t, 3)
	a, b, c := cl.nodes[0], cl.nodes[1], cl.nodes[2]
	m := a.register(t, "leaver")
	for _, n := range []*clusterNode{a, c} {
		for range 2 { // the second call is answered from the cache
			if _, err := n.as(m).Members.GetMe(t.Context(), &v1.GetMeRequest{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	heardBefore := []uint64{a.busStats().RevocationsReceived, c.busStats().RevocationsReceived}

	if _, err := b.as(m).Members.Logout(t.Context(), &v1.LogoutRequest{}); err != nil {
		t.Fatal(err)
	}
	for i, n := range []*clusterNode{a, c} {
		waitFor(t, "the revocation reaches the node", func() bool { return n.busStats().RevocationsReceived > heardBefore[i] })
		_, err := n.as(m).Members.GetMe(t.Context(), &v1.GetMeRequest{})
		wantCode(t, err, connect.CodeUnauthenticated)
	}
}

// A cached session is refused from its expires_at on, by the server's clock,
// though the cache entry is fresh and the database (on its own clock) would
// still accept it.
func TestSessionCacheRefusesAtExpiry(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Now()}
	e := newEnv(t, func(d *server.Deps) { d.Now = clock.Now })
	m := e.register(t, "expiring")
	anon := e.clients("")
	res, err := anon.Members.Login(t.Context(), &v1.LoginRequest{Phone: m.Phone, Password: m.Password, DeviceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	dev := e.clients(res.GetAccessToken())
	expires := res.GetExpiresAt().AsTime()
	if _, err := dev.Members.GetMe(t.Context(), &v1.GetMeRequest{}); err != nil { // cached now
		t.Fatal(err)
	}

	clock.set(expires.Add(-time.Millisecond))
	if _, err := dev.Members.GetMe(t.Context(), &v1.GetMeRequest{}); err != nil {
		t.Fatalf("a millisecond before expiry: %v", err)
	}
	clock.set(expires)
	_, err = dev.Members.GetMe(t.Context(), &v1.GetMeRequest{})
	wantCode(t, err, connect.CodeUnauthenticated)
	// And it stays refused once the cache has dropped it.
	_, err = dev.Members.GetMe(t.Context(), &v1.GetMeRequest{})
	wantCode(t, err, connect.CodeUnauthenticated)
}

// sessionReads counts the statements that read a session by its token.
type sessionReads struct{ n atomic.Int64 }

func (s *sessionReads) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if strings.Contains(data.SQL, "GetSessionByTokenHash") {
		s.n.Add(1)
	}
	return ctx
}

func (s *sessionReads) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// The cache removes the database round trip: twenty calls on one token read
// its session once.
func TestSessionCacheSavesTheDatabaseRead(t *testing.T) {
	t.Parallel()
	cfg, err := pgxpool.ParseConfig(testdb.NewURL(t))
	if err != nil {
		t.Fatal(err)
	}
	reads := &sessionReads{}
	cfg.ConnConfig.Tracer = reads
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e := newEnv(t, withPool(pool))
	m := e.register(t, "busy")
	before := reads.n.Load()
	for range 20 {
		if _, err := m.Members.GetMe(t.Context(), &v1.GetMeRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := reads.n.Load() - before; got != 1 {
		t.Errorf("20 calls read the session %d times, want 1", got)
	}
	// A revocation empties the entry: the next call reads (and fails).
	if _, err := m.Members.RevokeSession(t.Context(), &v1.RevokeSessionRequest{SessionId: m.SessionID}); err != nil {
		t.Fatal(err)
	}
	_, err = m.Members.GetMe(t.Context(), &v1.GetMeRequest{})
	wantCode(t, err, connect.CodeUnauthenticated)
	if got := reads.n.Load() - before; got != 2 {
		t.Errorf("after the revocation: %d reads, want 2", got)
	}
}
