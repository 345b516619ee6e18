package push

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{1, 1}, {2, 2}, {5, 8}, {16, 16}, {17, 32}} {
		if got := (Config{Shards: tc.in}).withDefaults().Shards; got != tc.want {
			t.Errorf("Shards %d → %d, want %d", tc.in, got, tc.want)
		}
	}
	d, want := Config{}.withDefaults(), DefaultConfig()
	if d.Shards&(d.Shards-1) != 0 || d.Shards < want.Shards || d.QueueSize != want.QueueSize || d.WriteTimeout != want.WriteTimeout ||
		d.PingInterval != want.PingInterval || d.PingTimeout != want.PingTimeout || d.ReadLimit != want.ReadLimit || d.Bus != nil {
		t.Errorf("defaults: %+v, want %+v", d, want)
	}
}

// Both devices of a member get the event, each in its own encoding, and
// members not addressed get nothing.
func TestDeliveryBothEncodings(t *testing.T) {
	e := newEnv(t, Config{}, nil)
	phone := e.dial(t, 1, 10, SubprotocolProto)
	browser := e.dial(t, 1, 11, SubprotocolJSON)
	other := e.dial(t, 2, 20)     // no subprotocol: binary proto
	bystander := e.dial(t, 3, 30) // not addressed

	ev, err := structpb.NewStruct(map[string]any{"kind": "message", "seq": 7, "text": "héllo", "tags": []any{"a", true}})
	if err != nil {
		t.Fatal(err)
	}
	e.hub.Publish([]int64{1, 2}, ev)

	for name, c := range map[string]*websocket.Conn{"phone": phone, "browser": browser, "other": other} {
		var got structpb.Struct
		read(t, c, &got)
		if !proto.Equal(&got, ev) {
			t.Errorf("%s got %v, want %v", name, &got, ev)
		}
	}
	// Had the bystander been sent the first event, it would read it first.
	e.hub.Publish([]int64{3}, wrapperspb.String("sentinel"))
	if got := readString(t, bystander); got != "sentinel" {
		t.Errorf("bystander got %q before its own event", got)
	}
	statsEventually(t, e.hub, func(s Stats) bool {
		return s.Published == 2 && s.Delivered == 4 && s.Connections == 4 && s.Dropped == 0
	})
}

func TestAuth(t *testing.T) {
	e := newEnv(t, Config{}, nil)

	t.Run("header", func(t *testing.T) {
		c := e.dial(t, 1, 1)
		if c.Subprotocol() != "" {
			t.Errorf("subprotocol %q, want none", c.Subprotocol())
		}
		e.hub.Publish([]int64{1}, wrapperspb.String("hi"))
		if got := readString(t, c); got != "hi" {
			t.Errorf("got %q", got)
		}
	})

	for _, enc := range []string{SubprotocolJSON, SubprotocolProto} {
		t.Run("subprotocol/"+enc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), waitFor)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{
				Subprotocols: []string{bearerProtocolPrefix + token(2, 2), enc},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			wait(t, e.registered)
			if got := resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != enc {
				t.Errorf("server echoed %q, want only %q", got, enc)
			}
			if c.Subprotocol() != enc {
				t.Errorf("subprotocol %q", c.Subprotocol())
			}
			e.hub.Publish([]int64{2}, wrapperspb.String("hi "+enc))
			if got := readString(t, c); got != "hi "+enc {
				t.Errorf("got %q", got)
			}
		})
	}

	for _, tc := range []struct {
		name  string
		opts  websocket.DialOptions
		query string
	}{
		{name: "none"},
		{name: "bad header", opts: websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer nope"}}}},
		{name: "not bearer", opts: websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Basic " + token(1, 1)}}}},
		{name: "bad subprotocol", opts: websocket.DialOptions{Subprotocols: []string{SubprotocolJSON, bearerProtocolPrefix + "nope"}}},
		{name: "query string", query: "?access_token=" + token(1, 1)},
	} {
		t.Run("401/"+tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), waitFor)
			defer cancel()
			c, resp, err := websocket.Dial(ctx, e.url+tc.query, &tc.opts)
			if err == nil {
				c.CloseNow()
				t.Fatal("dial succeeded")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("got %v, %v; want 401", resp, err)
			}
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), "bearer token") {
				t.Errorf("body %q", body)
			}
		})
	}
}

// A socket that stops taking frames is closed with 1008 once its queue
// overflows, while the member's other device receives everything. The slow
// socket's writer is held by a test hook so the overflow is deterministic.
func TestSlowConsumer(t *testing.T) {
	const queue = 4
	release := make(chan struct{})
	e := newEnv(t, Config{QueueSize: queue}, func(h *Hub) {
		h.testHookWrite = func(c *conn) {
			if c.session == 2 {
				<-release
			}
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the env's shutdown
	fast := e.dial(t, 1, 1)
	slow := e.dial(t, 1, 2, SubprotocolJSON) // never reads until the end

	const n = 20
	for i := range n {
		e.hub.Publish([]int64{1}, wrapperspb.String(fmt.Sprint(i)))
		if got := readString(t, fast); got != fmt.Sprint(i) {
			t.Fatalf("fast got %q, want %d", got, i)
		}
	}
	// The writer holds at most one frame and the queue `queue` more; the next
	// publish overflowed, and nothing was ever written to the slow socket.
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	_, _, err := slow.Read(ctx) // the close frame is the first thing it gets
	closedWith(t, err, websocket.StatusPolicyViolation, "too slow: resync")
	// Dropped: the overflowing frame and the `queue` frames behind it (the one
	// the writer holds is counted when its write fails after release). Later
	// publishes no longer address the slow socket.
	statsEventually(t, e.hub, func(s Stats) bool {
		return s.SlowConsumerDisconnects == 1 && s.Connections == 1 && s.Delivered == n && s.Dropped == queue+1
	})
}

func TestSubscriptionSlowConsumer(t *testing.T) {
	h := NewHub(Config{QueueSize: 2}, testLogger())
	defer h.Shutdown(context.Background())
	sub, err := h.Subscribe(t.Context(), Principal{MemberID: 1, SessionID: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		h.Publish([]int64{1}, wrapperspb.String(fmt.Sprint(i)))
	}
	if _, err := sub.Next(t.Context()); !errors.Is(err, ErrSlowConsumer) {
		t.Fatalf("Next: %v, want ErrSlowConsumer", err)
	}
	if s := h.Stats(); s.SlowConsumerDisconnects != 1 || s.Subscriptions != 0 || s.Dropped != 3 {
		t.Errorf("stats %+v", s)
	}
}

// A Subscription delivers in order and ends when its ctx does; then no map
// entry is left behind.
func TestSubscriptionLifecycle(t *testing.T) {
	h := NewHub(Config{Shards: 2}, testLogger())
	defer h.Shutdown(context.Background())
	ctx, cancel := context.WithCancel(t.Context())
	sub, err := h.Subscribe(ctx, Principal{MemberID: 5, SessionID: 50})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		h.Publish([]int64{5}, wrapperspb.String(fmt.Sprint(i)))
	}
	for i := range 3 {
		ev, err := sub.Next(t.Context())
		if err != nil || ev.(*wrapperspb.StringValue).GetValue() != fmt.Sprint(i) {
			t.Fatalf("Next = %v, %v; want %d", ev, err, i)
		}
	}
	got := make(chan error, 1)
	go func() { _, err := sub.Next(t.Context()); got <- err }()
	cancel()
	if err := wait(t, got); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after ctx end: %v", err)
	}
	sub.Close() // idempotent
	for _, s := range h.shards {
		s.mu.RLock()
		if len(s.members) != 0 || len(s.sessions) != 0 {
			t.Errorf("shard not empty: %v %v", s.members, s.sessions)
		}
		s.mu.RUnlock()
	}
	if s := h.Stats(); s.Subscriptions != 0 || s.Delivered != 3 {
		t.Errorf("stats %+v", s)
	}
}

// CloseSession closes exactly that session's sockets (4001) and ends its
// Subscription; the member's other session keeps receiving.
func TestCloseSession(t *testing.T) {
	e := newEnv(t, Config{}, nil)
	a1 := e.dial(t, 1, 10)
	a2 := e.dial(t, 1, 10, SubprotocolJSON)
	b := e.dial(t, 1, 11)
	subA, err := e.hub.Subscribe(t.Context(), Principal{MemberID: 1, SessionID: 10})
	if err != nil {
		t.Fatal(err)
	}
	subB, err := e.hub.Subscribe(t.Context(), Principal{MemberID: 1, SessionID: 11})
	if err != nil {
		t.Fatal(err)
	}

	e.hub.CloseSession(10)
	for _, c := range []*websocket.Conn{a1, a2} {
		closedWith(t, readClose(t, c), StatusSessionRevoked, "session revoked")
	}
	if _, err := subA.Next(t.Context()); !errors.Is(err, ErrSessionRevoked) {
		t.Errorf("subA.Next: %v", err)
	}

	e.hub.Publish([]int64{1}, wrapperspb.String("after"))
	if got := readString(t, b); got != "after" {
		t.Errorf("b got %q", got)
	}
	if ev, err := subB.Next(t.Context()); err != nil || ev.(*wrapperspb.StringValue).GetValue() != "after" {
		t.Errorf("subB.Next = %v, %v", ev, err)
	}
	if s := e.hub.Stats(); s.Connections != 1 || s.Subscriptions != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestShutdown(t *testing.T) {
	e := newEnv(t, Config{}, nil)
	ends := []<-chan error{reader(e.dial(t, 1, 1), nil), reader(e.dial(t, 2, 2, SubprotocolJSON), nil)}
	sub, err := e.hub.Subscribe(t.Context(), Principal{MemberID: 3, SessionID: 3})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	if err := e.hub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, end := range ends {
		closedWith(t, wait(t, end), websocket.StatusGoingAway, "server shutting down")
	}
	if _, err := sub.Next(ctx); !errors.Is(err, ErrShutdown) {
		t.Errorf("Next: %v", err)
	}

	// New receivers are refused; Publish is a no-op; Shutdown is idempotent.
	c, resp, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + token(1, 1)}},
	})
	if err == nil {
		c.CloseNow()
		t.Fatal("dial after shutdown succeeded")
	}
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after shutdown: %v, %v", resp, err)
	}
	if _, err := e.hub.Subscribe(ctx, Principal{MemberID: 3, SessionID: 3}); !errors.Is(err, ErrShutdown) {
		t.Errorf("Subscribe after shutdown: %v", err)
	}
	e.hub.Publish([]int64{1, 2, 3}, wrapperspb.String("late"))
	if err := e.hub.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	if s := e.hub.Stats(); s.Published != 0 || s.Connections != 0 || s.Subscriptions != 0 {
		t.Errorf("stats %+v", s)
	}
}

// A peer that completed the handshake but never answers pings is dropped
// after PingInterval+PingTimeout; a live peer stays.
func TestDeadPeer(t *testing.T) {
	e := newEnv(t, Config{PingInterval: 50 * time.Millisecond, PingTimeout: 300 * time.Millisecond}, nil)
	live := e.dial(t, 1, 1)
	liveMsgs := make(chan []byte, 1)
	liveEnd := reader(live, liveMsgs)

	raw, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	fmt.Fprintf(raw, "GET /v1/push HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"Authorization: Bearer %s\r\n\r\n", e.srv.Listener.Addr(), token(2, 2))
	raw.SetReadDeadline(time.Now().Add(waitFor))
	br := bufio.NewReader(raw)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	wait(t, e.registered)

	// Read raw frames, answering nothing, until the server hangs up.
	pings := 0
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("want EOF, got %v", err)
			}
			break
		}
		if hdr[0]&0x0f == 0x9 {
			pings++
		}
		if _, err := io.CopyN(io.Discard, br, int64(hdr[1]&0x7f)); err != nil { // control frames: < 126 bytes
			t.Fatal(err)
		}
	}
	if pings == 0 {
		t.Error("server sent no ping")
	}
	if s := e.hub.Stats(); s.DeadPeers != 1 || s.Connections != 1 {
		t.Errorf("stats %+v", s)
	}
	select {
	case err := <-liveEnd:
		t.Fatalf("live peer dropped: %v", err)
	default:
	}
	e.hub.Publish([]int64{1}, wrapperspb.String("still here"))
	var v wrapperspb.StringValue
	if err := proto.Unmarshal(wait(t, liveMsgs), &v); err != nil || v.GetValue() != "still here" {
		t.Errorf("live peer got %v, %v", &v, err)
	}
}

// Many publishers to many sockets: every frame arrives exactly once, in each
// publisher's order.
func TestConcurrentPublishers(t *testing.T) {
	const (
		members    = 10
		devices    = 2
		publishers = 4
		perPub     = 125
		total      = publishers * perPub
	)
	e := newEnv(t, Config{QueueSize: total}, nil) // room for everything: no overflow possible
	ids := make([]int64, members)
	var wg sync.WaitGroup
	errs := make(chan error, members*devices)
	for m := range members {
		ids[m] = int64(m + 1)
		for d := range devices {
			var c *websocket.Conn
			if d%2 == 0 {
				c = e.dial(t, int64(m+1), int64(m*devices+d))
			} else {
				c = e.dial(t, int64(m+1), int64(m*devices+d), SubprotocolJSON)
			}
			wg.Go(func() { errs <- consume(c, publishers, perPub) })
		}
	}

	var pub sync.WaitGroup
	for p := range publishers {
		pub.Go(func() {
			for i := range perPub {
				e.hub.Publish(ids, wrapperspb.String(fmt.Sprintf("%d:%d", p, i)))
			}
		})
	}
	pub.Wait()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	statsEventually(t, e.hub, func(s Stats) bool {
		return s.Delivered == members*devices*total && s.Dropped == 0 && s.Published == total
	})
}

// consume reads publishers*perPub events and checks each publisher's sequence.
func consume(c *websocket.Conn, publishers, perPub int) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	next := make([]int, publishers)
	for range publishers * perPub {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		var v wrapperspb.StringValue
		if err := decode(c, typ, b, &v); err != nil {
			return err
		}
		var p, i int
		if _, err := fmt.Sscanf(v.GetValue(), "%d:%d", &p, &i); err != nil {
			return fmt.Errorf("event %q: %w", v.GetValue(), err)
		}
		if i != next[p] {
			return fmt.Errorf("publisher %d: got %d, want %d", p, i, next[p])
		}
		next[p]++
	}
	return nil
}

func TestHandshakeParsing(t *testing.T) {
	for _, tc := range []struct {
		auth, protos    string
		token, encoding string
	}{
		{"Bearer abc", "", "abc", ""},
		{"bearer  abc ", SubprotocolJSON, "abc", SubprotocolJSON},
		{"", bearerProtocolPrefix + "xyz, " + SubprotocolJSON + ", " + SubprotocolProto, "xyz", SubprotocolJSON},
		{"Bearer abc", bearerProtocolPrefix + "xyz", "abc", ""}, // the header wins
		{"Basic abc", "chat, " + SubprotocolProto, "", SubprotocolProto},
	} {
		r, _ := http.NewRequest(http.MethodGet, "/v1/push", nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		if tc.protos != "" {
			r.Header.Set("Sec-WebSocket-Protocol", tc.protos)
		}
		if tok, enc := handshake(r); tok != tc.token || enc != tc.encoding {
			t.Errorf("%q %q → %q %q, want %q %q", tc.auth, tc.protos, tok, enc, tc.token, tc.encoding)
		}
	}
}

func TestFIFO(t *testing.T) {
	var q fifo
	frames := make([]*frame, 100)
	for i := range frames {
		frames[i] = &frame{}
	}
	next, out := 0, 0
	// Interleave pushes and pops so the front is consumed while the buffer is full.
	for _, step := range []struct{ push, pop int }{{3, 1}, {5, 2}, {1, 5}, {40, 10}, {7, 38}, {20, 20}} {
		for range step.push {
			q.push(frames[next])
			next++
		}
		for range step.pop {
			if f := q.pop(); f != frames[out] {
				t.Fatalf("pop %d: wrong frame", out)
			}
			out++
		}
		if q.len() != next-out {
			t.Fatalf("len %d, want %d", q.len(), next-out)
		}
	}
	if q.buf != nil {
		t.Errorf("drained queue kept a %d-slot buffer", cap(q.buf))
	}
	q.push(frames[0])
	q.pop()
	if cap(q.buf) == 0 || cap(q.buf) > fifoKeep {
		t.Errorf("small drained buffer: cap %d", cap(q.buf))
	}
	q.push(frames[1])
	q.push(frames[2])
	if n := q.reset(); n != 2 || q.len() != 0 || q.buf != nil {
		t.Errorf("reset: %d, %+v", n, q)
	}
}

// TestRegisteredBeforeHandshakeCompletes: an event published as soon as Dial
// returns reaches the socket. Clients rely on this to connect, then read
// history, and miss nothing in between.
func TestRegisteredBeforeHandshakeCompletes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{}, nil)
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		c, _, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{
			HTTPHeader: http.Header{"Authorization": {"Bearer " + token(int64(100+i), int64(i))}},
		})
		cancel()
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		e.hub.Publish([]int64{int64(100 + i)}, wrapperspb.Int64(int64(i)))
		got := &wrapperspb.Int64Value{}
		read(t, c, got)
		if got.GetValue() != int64(i) {
			t.Fatalf("got %v, want %d", got, i)
		}
		c.CloseNow()
	}
}

// TestClientDataFrameClosesAtOnce: clients send no messages; one that does is
// closed with a policy violation, and the hub has let go of it by the time
// the client sees the close.
func TestClientDataFrameClosesAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{}, nil)
	c := e.dial(t, 7, 70)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte("hello?")); err != nil {
		t.Fatalf("write: %v", err)
	}
	_, _, err := c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
		t.Fatalf("read after a data frame = %v, want close status policy violation", err)
	}
	if n := e.hub.Stats().Connections; n != 0 {
		t.Fatalf("hub still holds %d connections", n)
	}
}

// TestWriteTimeout: a peer that completed the handshake and then stopped
// reading fills the TCP buffers until a write blocks; the shard's watchdog
// drops the socket once that write has taken WriteTimeout, long before its
// queue would overflow and with no ping to notice.
func TestWriteTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{WriteTimeout: 200 * time.Millisecond, PingInterval: time.Hour, QueueSize: 1 << 20}, nil)
	raw, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	fmt.Fprintf(raw, "GET /v1/push HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"Authorization: Bearer %s\r\n\r\n", e.srv.Listener.Addr(), token(2, 2))
	raw.SetReadDeadline(time.Now().Add(waitFor))
	resp, err := http.ReadResponse(bufio.NewReader(raw), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	wait(t, e.registered)

	big := wrapperspb.String(strings.Repeat("x", 64<<10)) // one event per message: written alone
	for range 4096 {                                      // 256 MiB: more than any socket buffer holds
		if e.hub.Stats().Connections == 0 {
			break
		}
		e.hub.Publish([]int64{2}, big)
	}
	statsEventually(t, e.hub, func(s Stats) bool {
		return s.Connections == 0 && s.DeadPeers == 1 && s.SlowConsumerDisconnects == 0
	})
}
