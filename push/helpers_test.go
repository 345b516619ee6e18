package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// waitFor bounds every wait on an event in these tests.
const waitFor = 10 * time.Second

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// token encodes a principal; testAuth decodes it. Anything else is rejected.
func token(member, session int64) string { return fmt.Sprintf("tok.%d.%d", member, session) }

func testAuth(_ context.Context, tok string) (Principal, error) {
	var p Principal
	if _, err := fmt.Sscanf(tok, "tok.%d.%d", &p.MemberID, &p.SessionID); err != nil {
		return Principal{}, ErrBadToken
	}
	return p, nil
}

type env struct {
	hub        *Hub
	srv        *httptest.Server
	url        string
	registered chan *conn
}

// newEnv starts a hub behind an httptest server. setup runs before the server
// starts (to install test hooks). Cleanup shuts both down.
func newEnv(t testing.TB, cfg Config, setup func(*Hub)) *env {
	t.Helper()
	return newEnvAuth(t, cfg, testAuth, setup)
}

// newEnvAuth is newEnv with the handler authenticating through authn.
func newEnvAuth(t testing.TB, cfg Config, authn Authenticator, setup func(*Hub)) *env {
	t.Helper()
	h := NewHub(cfg, testLogger())
	e := &env{hub: h, registered: make(chan *conn, 4096)}
	h.testHookRegistered = func(c *conn) { e.registered <- c }
	if setup != nil {
		setup(h)
	}
	e.srv = httptest.NewServer(NewHandler(h, authn))
	e.url = "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/push"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		e.srv.Close()
	})
	return e
}

// dial connects with header auth, offering the given subprotocols, and waits
// until the hub has registered the socket (the 101 reaches the client first).
func (e *env) dial(t testing.TB, member, session int64, subprotocols ...string) *websocket.Conn {
	t.Helper()
	return e.dialWith(t, &websocket.DialOptions{
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token(member, session)}},
		Subprotocols: subprotocols,
	})
}

func (e *env) dialWith(t testing.TB, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.url, opts)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	select {
	case <-e.registered:
	case <-ctx.Done():
		t.Fatal("socket never registered")
	}
	return c
}

// read reads one event frame and decodes it per the socket's subprotocol.
func read(t testing.TB, c *websocket.Conn, into proto.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := decode(c, typ, b, into); err != nil {
		t.Fatal(err)
	}
}

func decode(c *websocket.Conn, typ websocket.MessageType, b []byte, into proto.Message) error {
	if c.Subprotocol() == SubprotocolJSON {
		if typ != websocket.MessageText {
			return fmt.Errorf("json socket got frame type %v", typ)
		}
		return protojson.Unmarshal(b, into)
	}
	if typ != websocket.MessageBinary {
		return fmt.Errorf("proto socket got frame type %v", typ)
	}
	return proto.Unmarshal(b, into)
}

func readString(t testing.TB, c *websocket.Conn) string {
	t.Helper()
	var v wrapperspb.StringValue
	read(t, c, &v)
	return v.GetValue()
}

// readClose reads until the socket ends and returns the close error.
func readClose(t testing.TB, c *websocket.Conn) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return err
		}
	}
}

// closedWith fails unless err is a close frame with code and reason.
func closedWith(t testing.TB, err error, code websocket.StatusCode, reason string) {
	t.Helper()
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code || ce.Reason != reason {
		t.Fatalf("got %v, want close %v %q", err, code, reason)
	}
}

// reader reads a socket in the background (so it answers pings and close
// frames), forwards data frames to msgs when it is not nil, and reports the
// error that ended it.
func reader(c *websocket.Conn, msgs chan<- []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				done <- err
				return
			}
			if msgs != nil {
				msgs <- b
			}
		}
	}()
	return done
}

// statsEventually waits for the hub's counters to satisfy ok. The writer
// counts a frame after the write returns, which can be after the client has
// read it; nothing else in these tests polls.
func statsEventually(t testing.TB, h *Hub, ok func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for s := h.Stats(); !ok(s); s = h.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
}

func wait[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitFor):
		t.Fatal("timed out")
		panic("unreachable")
	}
}
