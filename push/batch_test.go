package push

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// readMessage reads one WebSocket message and returns the values of the
// StringValue events it carries: one for a single-event subprotocol, every
// event of the EventBatch for a batched one. It parses the batch wire formats
// by hand, independently of the code that builds them, and checks the
// message type; n is the message's size.
func readMessage(t testing.TB, c *websocket.Conn) (values []string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	values, err = decodeMessage(c.Subprotocol(), typ, b)
	if err != nil {
		t.Fatal(err)
	}
	return values, len(b)
}

func decodeMessage(subprotocol string, typ websocket.MessageType, b []byte) ([]string, error) {
	enc, _ := encodingOf(subprotocol)
	want := websocket.MessageBinary
	if enc.json() {
		want = websocket.MessageText
	}
	if typ != want {
		return nil, fmt.Errorf("%q socket got a message of type %v", subprotocol, typ)
	}
	var raw [][]byte
	switch enc {
	case encProto, encJSON:
		raw = [][]byte{b}
	case encProtoBatch: // repeated Event events = 1: (0x0a, varint length, bytes)*
		for len(b) > 0 {
			num, wt, n := protowire.ConsumeTag(b)
			if n < 0 || num != 1 || wt != protowire.BytesType {
				return nil, fmt.Errorf("batch: bad tag at %q", b)
			}
			ev, m := protowire.ConsumeBytes(b[n:])
			if m < 0 {
				return nil, fmt.Errorf("batch: bad length at %q", b)
			}
			raw = append(raw, ev)
			b = b[n+m:]
		}
	case encJSONBatch:
		var batch struct{ Events []json.RawMessage }
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&batch); err != nil {
			return nil, fmt.Errorf("batch %q: %w", b, err)
		}
		for _, ev := range batch.Events {
			raw = append(raw, ev)
		}
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("%q message with no event", subprotocol)
	}
	values := make([]string, len(raw))
	for i, ev := range raw {
		var v wrapperspb.StringValue
		var err error
		if enc.json() {
			err = protojson.Unmarshal(ev, &v)
		} else {
			err = proto.Unmarshal(ev, &v)
		}
		if err != nil {
			return nil, fmt.Errorf("event %d of %q: %w", i, ev, err)
		}
		values[i] = v.GetValue()
	}
	return values, nil
}

// gate holds a socket's writer before each write until the test lets it
// go; entered says the writer has taken its next message and is waiting.
type gate struct {
	entered chan struct{}
	permits chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}, 64), permits: make(chan struct{}, 64)}
}

// hook holds the writers of the given sessions.
func (g *gate) hook(sessions ...int64) func(*conn) {
	return func(c *conn) {
		if !slices.Contains(sessions, c.session) {
			return
		}
		g.entered <- struct{}{}
		<-g.permits
	}
}

// events names n events "ev-00", "ev-01", … (the same size each).
func events(from, n int) []string {
	var out []string
	for i := from; i < from+n; i++ {
		out = append(out, fmt.Sprintf("ev-%02d", i))
	}
	return out
}

// TestBatchOrderAndBounds holds a socket's writer on its first message
// (event 0) while more events queue up, then lets it go and checks how the
// events were cut into WebSocket messages: exactly, in order, within the
// bounds. The single-event subprotocols get one event per message whatever
// is queued.
func TestBatchOrderAndBounds(t *testing.T) {
	// A StringValue "ev-NN" is 7 bytes in binary (0a 05 + 5) and, in a binary
	// batch, 9 (0a 07 + 7); in JSON it is "\"ev-NN\"", 7 bytes, and costs 8
	// with its comma; a JSON batch adds {"events":[ and ]}: 13 bytes.
	for _, tc := range []struct {
		name        string
		subprotocol string
		cfg         Config
		queued      []string   // published while event 0 is held
		want        [][]string // the messages after [ev-00]
	}{
		{
			name: "proto unchanged", subprotocol: SubprotocolProto, cfg: Config{},
			queued: events(1, 3), want: [][]string{{"ev-01"}, {"ev-02"}, {"ev-03"}},
		},
		{
			name: "json unchanged", subprotocol: SubprotocolJSON, cfg: Config{},
			queued: events(1, 3), want: [][]string{{"ev-01"}, {"ev-02"}, {"ev-03"}},
		},
		{
			name: "proto.batch everything queued", subprotocol: SubprotocolProtoBatch, cfg: Config{},
			queued: events(1, 10), want: [][]string{events(1, 10)},
		},
		{
			name: "json.batch everything queued", subprotocol: SubprotocolJSONBatch, cfg: Config{},
			queued: events(1, 10), want: [][]string{events(1, 10)},
		},
		{
			name: "proto.batch cut by events", subprotocol: SubprotocolProtoBatch, cfg: Config{BatchEvents: 4},
			queued: events(1, 10), want: [][]string{events(1, 4), events(5, 4), events(9, 2)},
		},
		{
			name: "json.batch cut by events", subprotocol: SubprotocolJSONBatch, cfg: Config{BatchEvents: 4},
			queued: events(1, 10), want: [][]string{events(1, 4), events(5, 4), events(9, 2)},
		},
		{
			name: "proto.batch cut by bytes", subprotocol: SubprotocolProtoBatch, cfg: Config{BatchBytes: 3*9 + 8},
			queued: events(1, 7), want: [][]string{events(1, 3), events(4, 3), events(7, 1)},
		},
		{
			name: "json.batch cut by bytes", subprotocol: SubprotocolJSONBatch, cfg: Config{BatchBytes: 13 + 3*8 + 7},
			queued: events(1, 7), want: [][]string{events(1, 3), events(4, 3), events(7, 1)},
		},
		{
			name: "proto.batch event larger than the bound goes alone", subprotocol: SubprotocolProtoBatch, cfg: Config{BatchBytes: 3 * 9},
			queued: []string{"ev-01", strings.Repeat("x", 100), "ev-02", "ev-03", "ev-04", "ev-05"},
			want:   [][]string{{"ev-01"}, {strings.Repeat("x", 100)}, events(2, 3), events(5, 1)},
		},
		{
			name: "json.batch event larger than the bound goes alone", subprotocol: SubprotocolJSONBatch, cfg: Config{BatchBytes: 13 + 3*8},
			queued: []string{"ev-01", strings.Repeat("x", 100), "ev-02", "ev-03", "ev-04", "ev-05"},
			want:   [][]string{{"ev-01"}, {strings.Repeat("x", 100)}, events(2, 3), events(5, 1)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGate()
			e := newEnv(t, tc.cfg, func(h *Hub) { h.testHookWrite = g.hook(1) })
			c := e.dial(t, 1, 1, tc.subprotocol)
			if c.Subprotocol() != tc.subprotocol {
				t.Fatalf("subprotocol %q, want %q", c.Subprotocol(), tc.subprotocol)
			}
			// A client whose read limit is the server's bound reads every
			// batch (the one event above it aside).
			limit := int64(e.hub.cfg.BatchBytes)
			for _, v := range tc.queued {
				limit = max(limit, int64(len(v))+16)
			}
			c.SetReadLimit(limit)

			e.hub.Publish([]int64{1}, wrapperspb.String("ev-00"))
			wait(t, g.entered) // the writer has taken event 0 alone
			for _, v := range tc.queued {
				e.hub.Publish([]int64{1}, wrapperspb.String(v))
			}
			close(g.permits)

			got := [][]string{}
			for range 1 + len(tc.want) {
				vs, n := readMessage(t, c)
				if tc.subprotocol == SubprotocolProtoBatch || tc.subprotocol == SubprotocolJSONBatch {
					if len(vs) > e.hub.cfg.BatchEvents || (len(vs) > 1 && n > e.hub.cfg.BatchBytes) {
						t.Errorf("message of %d events, %d bytes: over the bounds (%d events, %d bytes)", len(vs), n, e.hub.cfg.BatchEvents, e.hub.cfg.BatchBytes)
					}
				}
				got = append(got, vs)
			}
			want := append([][]string{{"ev-00"}}, tc.want...)
			if !slices.EqualFunc(got, want, slices.Equal) {
				t.Errorf("messages:\n got %q\nwant %q", got, want)
			}
			total := uint64(1 + len(tc.queued))
			statsEventually(t, e.hub, func(s Stats) bool {
				return s.Delivered == total && s.Messages == uint64(len(want)) && s.Dropped == 0
			})
		})
	}
}

// TestBatchSlowConsumer: a batched socket that falls QueueSize events behind
// is closed with 1008 like any other; what it received before the close is
// a prefix of what was published, in order, and every event is accounted
// for as delivered or dropped.
func TestBatchSlowConsumer(t *testing.T) {
	t.Parallel()
	const queue = 8
	g := newGate()
	e := newEnv(t, Config{QueueSize: queue, BatchEvents: 3}, func(h *Hub) { h.testHookWrite = g.hook(1) })
	t.Cleanup(func() { close(g.permits) }) // runs before the env's shutdown
	c := e.dial(t, 1, 1, SubprotocolProtoBatch)

	pub := func(from, to int) {
		for i := from; i <= to; i++ {
			e.hub.Publish([]int64{1}, wrapperspb.String(fmt.Sprintf("ev-%02d", i)))
		}
	}
	pub(0, 0)
	wait(t, g.entered) // [0] taken
	pub(1, queue)      // the queue is full: 1..8
	g.permits <- struct{}{}
	wait(t, g.entered)      // [0] written; [1 2 3] taken, 4..8 queued
	pub(queue+1, 11)        // 4..11: full again
	pub(12, 12)             // overflow: closed with 1008, 4..12 dropped
	g.permits <- struct{}{} // [1 2 3] is written, or fails if the close went first

	var got []string
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			closedWith(t, err, websocket.StatusPolicyViolation, "too slow: resync")
			break
		}
		vs, err := decodeMessage(c.Subprotocol(), typ, b)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, vs...)
	}
	if all := events(0, 13); len(got) == 0 || !slices.Equal(got, all[:len(got)]) {
		t.Fatalf("received %q: want a prefix of %q starting with ev-00", got, all)
	}
	statsEventually(t, e.hub, func(s Stats) bool {
		return s.SlowConsumerDisconnects == 1 && s.Delivered+s.Dropped == 13 && s.Delivered >= uint64(len(got))
	})
}

// TestCoalesceWindow: a batched socket that has not written lately gets an
// event at once; once busy, its writer waits (linger) after a write, and
// what arrives meanwhile leaves as one message. The window is an hour, so
// only the hook ends a wait: a first write that waited would never come.
func TestCoalesceWindow(t *testing.T) {
	t.Parallel()
	lingering := make(chan struct{}, 4)
	release := make(chan struct{})
	e := newEnv(t, Config{CoalesceWindow: time.Hour}, func(h *Hub) {
		h.testHookLinger = func(*conn) {
			lingering <- struct{}{}
			<-release
		}
	})
	for _, sp := range []string{SubprotocolProto, SubprotocolJSONBatch} {
		t.Run(sp, func(t *testing.T) {
			member := int64(1)
			if sp == SubprotocolJSONBatch {
				member = 2
			}
			c := e.dial(t, member, member, sp)
			e.hub.Publish([]int64{member}, wrapperspb.String("ev-00"))
			if got, _ := readMessage(t, c); !slices.Equal(got, []string{"ev-00"}) { // idle: not held
				t.Fatalf("got %q", got)
			}
			e.hub.Publish([]int64{member}, wrapperspb.String("ev-01"))
			if got, _ := readMessage(t, c); !slices.Equal(got, []string{"ev-01"}) { // written first, then the writer lingers
				t.Fatalf("got %q", got)
			}
			if sp == SubprotocolProto {
				// One event per message: nothing to gather, never a wait.
				select {
				case <-lingering:
					t.Fatal("a single-event socket lingered")
				default:
				}
				return
			}
			wait(t, lingering)
			for _, v := range events(2, 3) {
				e.hub.Publish([]int64{member}, wrapperspb.String(v))
			}
			release <- struct{}{}
			if got, _ := readMessage(t, c); !slices.Equal(got, events(2, 3)) {
				t.Fatalf("after the window got %q, want %q in one message", got, events(2, 3))
			}
			wait(t, lingering) // still busy: lingers again, then finds nothing and exits
			release <- struct{}{}
		})
	}
}

// TestBatchDecodesAsEventBatch: the batches the hub builds from encoded
// events are exactly what the generated karlmalone.v1.EventBatch reads, in
// binary and in JSON, and a single-event socket still gets bare Events.
func TestBatchDecodesAsEventBatch(t *testing.T) {
	t.Parallel()
	// The batched sockets' writers are held at their first write, so they
	// send event 0 alone and then 1 and 2 together.
	g := newGate()
	e := newEnv(t, Config{}, func(h *Hub) { h.testHookWrite = g.hook(10, 11) })
	sockets := map[string]*websocket.Conn{}
	for i, sp := range []string{SubprotocolProtoBatch, SubprotocolJSONBatch, SubprotocolProto, SubprotocolJSON} {
		sockets[sp] = e.dial(t, 1, int64(10+i), sp)
	}
	var published []*v1.Event
	for i := range 3 {
		published = append(published, &v1.Event{
			At: timestamppb.New(time.Unix(1700000000+int64(i), 0)),
			Kind: &v1.Event_Message{Message: &v1.Message{
				ConversationId: 7, Seq: int64(i + 1), SenderId: 3, ClientMsgId: fmt.Sprintf("c-%d", i),
				Content: &v1.Message_Text{Text: fmt.Sprintf("héllo \"%d\" \u2028", i)},
			}},
		})
	}
	e.hub.Publish([]int64{1}, published[0])
	wait(t, g.entered)
	wait(t, g.entered)
	for _, ev := range published[1:] {
		e.hub.Publish([]int64{1}, ev)
	}
	close(g.permits)

	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	for sp, c := range sockets {
		var got []*v1.Event
		messages := 0
		for ; len(got) < len(published); messages++ {
			_, b, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("%s: read: %v", sp, err)
			}
			enc, _ := encodingOf(sp)
			if enc.batched() {
				var batch v1.EventBatch
				if enc.json() {
					err = protojson.Unmarshal(b, &batch)
				} else {
					err = proto.Unmarshal(b, &batch)
				}
				if err != nil || len(batch.GetEvents()) == 0 {
					t.Fatalf("%s: decode EventBatch %q: %v", sp, b, err)
				}
				got = append(got, batch.GetEvents()...)
				continue
			}
			var ev v1.Event
			if enc.json() {
				err = protojson.Unmarshal(b, &ev)
			} else {
				err = proto.Unmarshal(b, &ev)
			}
			if err != nil {
				t.Fatalf("%s: decode Event %q: %v", sp, b, err)
			}
			got = append(got, &ev)
		}
		if !slices.EqualFunc(got, published, func(a, b *v1.Event) bool { return proto.Equal(a, b) }) {
			t.Errorf("%s: got %v, want %v", sp, got, published)
		}
		if enc, _ := encodingOf(sp); enc.batched() && messages != 2 {
			t.Errorf("%s: %d messages, want 2 ([0], [1 2])", sp, messages)
		}
	}
}

func TestBatchEncodingNegotiation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{}, nil)
	for _, tc := range []struct {
		offered []string
		want    string
	}{
		{[]string{SubprotocolProtoBatch, SubprotocolProto}, SubprotocolProtoBatch},
		{[]string{SubprotocolJSONBatch, SubprotocolJSON}, SubprotocolJSONBatch},
		{[]string{"karlmalone.v2.proto.batch", SubprotocolProto}, SubprotocolProto}, // unknown names are skipped
		{[]string{SubprotocolJSON, SubprotocolProtoBatch}, SubprotocolJSON},         // the client's order decides
	} {
		c := e.dial(t, 1, 1, tc.offered...)
		if c.Subprotocol() != tc.want {
			t.Errorf("offered %q: got %q, want %q", tc.offered, c.Subprotocol(), tc.want)
		}
		c.CloseNow()
	}
}
