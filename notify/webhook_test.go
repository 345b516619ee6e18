package notify_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/karlmalone/karlmalone/notify"
)

const secret = "s3cret"

// received is one POST the test server took.
type received struct {
	body         []byte
	ts, sig      string
	notification map[string]any
}

// gateway is a push gateway in the test: it records each POST on got and
// answers with status(n) for the n-th request (from 1); hold, when set, is
// waited on before answering.
type gateway struct {
	srv    *httptest.Server
	got    chan received
	n      atomic.Int64
	status func(n int64) int
	hold   chan struct{}
}

func newGateway(t *testing.T, status func(n int64) int) *gateway {
	g := &gateway{got: make(chan received, 100_000), status: status}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := g.n.Add(1)
		body, _ := io.ReadAll(r.Body)
		rec := received{body: body, ts: r.Header.Get(notify.HeaderTimestamp), sig: r.Header.Get(notify.HeaderSignature)}
		json.Unmarshal(body, &rec.notification)
		g.got <- rec
		if g.hold != nil {
			<-g.hold
		}
		w.WriteHeader(g.status(n))
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func ok(int64) int { return http.StatusNoContent }

func (g *gateway) next(t *testing.T) received {
	t.Helper()
	select {
	case r := <-g.got:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery in 10 s")
		return received{}
	}
}

func newWebhook(t *testing.T, g *gateway, cfg notify.Config) *notify.Webhook {
	cfg.URL, cfg.Secret = g.srv.URL, secret
	cfg.Backoff, cfg.MaxBackoff = time.Millisecond, time.Millisecond
	w := notify.NewWebhook(cfg, g.srv.Client(), nil)
	t.Cleanup(w.Close)
	return w
}

// waitStats polls the queue's counters (they change on the workers' own time).
func waitStats(t *testing.T, w interface{ Stats() notify.Stats }, what string, cond func(notify.Stats) bool) notify.Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := w.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, s)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWebhookSigned(t *testing.T) {
	g := newGateway(t, ok)
	w := newWebhook(t, g, notify.Config{})
	at := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	w.Notify(notify.Notification{MemberID: 7, ConversationID: 3, Seq: 9, SenderID: 5, LastSentAt: at})
	r := g.next(t)
	if !notify.Verify(secret, r.ts, r.sig, r.body) {
		t.Fatalf("signature %q does not verify for %q at %s", r.sig, r.body, r.ts)
	}
	if notify.Verify("another secret", r.ts, r.sig, r.body) || notify.Verify(secret, r.ts, r.sig, append(r.body, ' ')) {
		t.Fatal("a wrong secret or a changed body verifies")
	}
	want := map[string]any{
		"type": "message", "memberId": "7", "conversationId": "3", "seq": "9", "senderId": "5", "count": float64(1),
		"firstSentAt": "2026-12-02T12:00:00Z", "lastSentAt": "2026-12-02T12:00:00Z",
	}
	for k, v := range want {
		if r.notification[k] != v {
			t.Fatalf("%s: %v, want %v (all: %s)", k, r.notification[k], v, r.body)
		}
	}
	waitStats(t, w, "delivered", func(s notify.Stats) bool { return s.Delivered == 1 })
}

func TestWebhookRetries(t *testing.T) {
	t.Run("5xx then success", func(t *testing.T) {
		g := newGateway(t, func(n int64) int {
			if n < 3 {
				return http.StatusInternalServerError
			}
			return http.StatusOK
		})
		w := newWebhook(t, g, notify.Config{Attempts: 5})
		w.Notify(notify.Notification{MemberID: 1})
		first := g.next(t)
		for range 2 {
			if r := g.next(t); string(r.body) != string(first.body) {
				t.Fatalf("retry changed the body: %s, then %s", first.body, r.body)
			}
		}
		s := waitStats(t, w, "delivered", func(s notify.Stats) bool { return s.Delivered == 1 })
		if s.Failed != 0 || g.n.Load() != 3 {
			t.Fatalf("stats %+v after %d requests", s, g.n.Load())
		}
	})
	t.Run("gives up after the attempts", func(t *testing.T) {
		g := newGateway(t, func(int64) int { return http.StatusServiceUnavailable })
		w := newWebhook(t, g, notify.Config{Attempts: 3})
		w.Notify(notify.Notification{MemberID: 1})
		waitStats(t, w, "failed", func(s notify.Stats) bool { return s.Failed == 1 })
		if n := g.n.Load(); n != 3 {
			t.Fatalf("%d attempts, want 3", n)
		}
	})
	t.Run("4xx is final", func(t *testing.T) {
		g := newGateway(t, func(int64) int { return http.StatusBadRequest })
		w := newWebhook(t, g, notify.Config{Attempts: 3})
		w.Notify(notify.Notification{MemberID: 1})
		waitStats(t, w, "failed", func(s notify.Stats) bool { return s.Failed == 1 })
		if n := g.n.Load(); n != 1 {
			t.Fatalf("%d attempts, want 1", n)
		}
	})
}

// TestWebhookCoalesces: a burst for one member while a delivery is in flight
// becomes one more delivery, counting the burst.
func TestWebhookCoalesces(t *testing.T) {
	g := newGateway(t, ok)
	g.hold = make(chan struct{})
	w := newWebhook(t, g, notify.Config{Workers: 1})
	at := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	w.Notify(notify.Notification{MemberID: 1, Seq: 1, LastSentAt: at})
	g.next(t) // in flight, held
	for seq := int64(2); seq <= 6; seq++ {
		w.Notify(notify.Notification{MemberID: 1, ConversationID: 4, Seq: seq, LastSentAt: at.Add(time.Duration(seq) * time.Second)})
	}
	w.Notify(notify.Notification{MemberID: 2, Seq: 1, LastSentAt: at})
	if s := w.Stats(); s.Coalesced != 4 || s.Queued != 2 {
		t.Fatalf("stats %+v, want 4 coalesced and 2 waiting", s)
	}
	close(g.hold)
	r := g.next(t)
	want := map[string]any{"memberId": "1", "conversationId": "4", "seq": "6", "count": float64(5),
		"firstSentAt": "2026-12-02T12:00:02Z", "lastSentAt": "2026-12-02T12:00:06Z"}
	for k, v := range want {
		if r.notification[k] != v {
			t.Fatalf("%s: %v, want %v (all: %s)", k, r.notification[k], v, r.body)
		}
	}
	if r := g.next(t); r.notification["memberId"] != "2" {
		t.Fatalf("then %s", r.body)
	}
}

// TestWebhookNeverBlocks: with the gateway stuck, Notify keeps returning;
// what does not fit the queue is dropped and counted.
func TestWebhookNeverBlocks(t *testing.T) {
	g := newGateway(t, ok)
	g.hold = make(chan struct{})
	defer close(g.hold)
	w := newWebhook(t, g, notify.Config{Workers: 1, QueueSize: 10})
	w.Notify(notify.Notification{MemberID: 1})
	g.next(t) // the one worker is stuck on it
	const n = 10_000
	for m := int64(2); m < 2+n; m++ {
		w.Notify(notify.Notification{MemberID: m})
	}
	if s := w.Stats(); s.Queued != 10 || s.Dropped != n-10 {
		t.Fatalf("stats %+v, want 10 waiting and %d dropped", s, n-10)
	}
}

func TestEvents(t *testing.T) {
	g := newGateway(t, func(n int64) int {
		if n == 1 {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	e := notify.NewEvents(notify.Config{URL: g.srv.URL, Secret: secret, Workers: 1, Backoff: time.Millisecond}, g.srv.Client(), nil)
	t.Cleanup(e.Close)
	e.Send([]byte(`{"a":1}`))
	e.Send([]byte(`{"a":1}`)) // the same body twice: never coalesced
	for _, want := range []string{`{"a":1}`, `{"a":1}`, `{"a":1}`} {
		r := g.next(t)
		if string(r.body) != want || !notify.Verify(secret, r.ts, r.sig, r.body) {
			t.Fatalf("got %s signed %q", r.body, r.sig)
		}
	}
	waitStats(t, e, "delivered", func(s notify.Stats) bool { return s.Delivered == 2 })
}
