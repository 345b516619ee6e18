package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/server"
)

// Once shutdown begins, /readyz and gRPC health report not ready while RPCs
// are still served (cmd/karlmalone's TestShutdownOrder runs the whole order
// on a real process).
func TestShutdownNotReadyFirst(t *testing.T) {
	t.Parallel()
	life := new(server.Lifecycle)
	e := newEnv(t, func(d *server.Deps) { d.Lifecycle = life })
	a := e.register(t, "ann")
	health := grpchealth.NewClient(e.H2C, e.URL, connect.WithGRPC())
	ready := func() (int, grpchealth.Status) {
		res, err := e.H1.Get(e.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		h, err := health.Check(t.Context(), &grpchealth.CheckRequest{})
		if err != nil {
			t.Fatalf("health check: %v", err)
		}
		return res.StatusCode, h.Status
	}
	if code, status := ready(); code != http.StatusOK || status != grpchealth.StatusServing {
		t.Fatalf("before shutdown: /readyz %d, health %v", code, status)
	}
	life.BeginShutdown()
	if code, status := ready(); code != http.StatusServiceUnavailable || status != grpchealth.StatusNotServing {
		t.Fatalf("after shutdown began: /readyz %d, health %v; want 503 and not serving", code, status)
	}
	if _, err := a.Members.GetMe(t.Context(), &v1.GetMeRequest{}); err != nil {
		t.Fatalf("GetMe after shutdown began: %v", err)
	}
}

// Drain waits for the send pipeline: a send whose caller went away while its
// statement waited is still stored before Drain returns, so the pool closes
// under no batch.
func TestShutdownDrainsSendPipeline(t *testing.T) {
	t.Parallel()
	life := new(server.Lifecycle)
	e := newEnv(t, func(d *server.Deps) { d.Lifecycle = life })
	a := e.register(t, "ann")
	g := newGroup(t, a)

	// Hold the send mid-statement: a transaction of the test's own holds the
	// conversation's row lock. (SQL in a test to catch a call mid-statement,
	// which the API cannot do.)
	tx, err := e.Pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE`, g.GetConversationId()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	sent := make(chan error, 1)
	go func() {
		_, err := a.Chat.SendMessage(ctx, groupText(g.GetId(), "gone", "caller went away"))
		sent <- err
	}()
	waitFor(t, "the send to wait on the row lock", func() bool {
		var n int
		e.Pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&n)
		return n > 0
	})
	cancel()
	wantCode(t, <-sent, connect.CodeCanceled)

	life.BeginShutdown()
	drained := make(chan int, 1)
	go func() {
		if err := life.Drain(t.Context()); err != nil {
			t.Errorf("Drain: %v", err)
		}
		drained <- len(e.dbRows(t, "messages", "client_msg_id = 'gone'"))
	}()
	select {
	case n := <-drained:
		t.Fatalf("Drain returned while a send waited (%d stored)", n)
	case <-time.After(200 * time.Millisecond): // nothing to wait for: Drain must not return
	}
	tx.Rollback(t.Context())
	if n := <-drained; n != 1 {
		t.Fatalf("%d messages stored when Drain returned, want the one in flight", n)
	}
}
