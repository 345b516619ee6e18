package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// epoch is the origin of every timestamp the tracker stores (monotonic).
var epoch = time.Now()

func sinceEpoch() int64 { return int64(time.Since(epoch)) }

// Send states.
const (
	sendPending int32 = iota // scheduled, not started
	sendInFlight
	sendOK
	sendFailed
)

// sendRec is what the tracker knows of message i.
type sendRec struct {
	start     atomic.Int64 // sinceEpoch()+1 just before SendMessage; 0 = not started
	state     atomic.Int32
	delivered atomic.Int32 // distinct sockets that received it
	senderID  int64
	convID    int64 // from the response
	seq       int64
}

// tracker matches pushed messages to sends. A message's client_msg_id is
// "lg<run>-<i>": the run id keeps reruns apart (the server is idempotent on
// (sender, client_msg_id)), i indexes the table of send records.
type tracker struct {
	prefix      string
	prefixBytes []byte
	recs        []sendRec
	windowStart atomic.Int64 // sinceEpoch; sends started in [windowStart, windowEnd) are measured
	windowEnd   atomic.Int64

	latency   Histogram // send start → receipt by a member other than the sender, measured sends
	sendRPC   Histogram // SendMessage round trip, measured sends
	received  atomic.Int64
	inWindow  atomic.Int64 // deliveries received inside the window
	expected  atomic.Int64 // sum over successful sends of their target sockets
	stored    atomic.Int64 // successful sends
	dups      atomic.Int64
	foreign   atomic.Int64 // message events that are not ours (another run, another client)
	unordered atomic.Int64

	mu       sync.Mutex
	examples []string // a few duplicates, for the report
}

func newTracker(n int) *tracker {
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	prefix := "lg" + run + "-"
	return &tracker{prefix: prefix, prefixBytes: []byte(prefix), recs: make([]sendRec, n)}
}

func (t *tracker) clientMsgID(i int) string { return t.prefix + strconv.Itoa(i) }

func (t *tracker) measured(start int64) bool {
	return start-1 >= t.windowStart.Load() && start-1 < t.windowEnd.Load()
}

func (t *tracker) note(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.examples) < 5 {
		t.examples = append(t.examples, fmt.Sprintf(format, args...))
	}
}

// recvSocket is one of the load generator's online devices.
type recvSocket struct {
	idx     int
	m       *member
	ws      *websocket.Conn
	closing atomic.Bool // set before the load generator closes it

	// Owned by the reader goroutine until done is closed.
	seen     bitset // message indexes received
	lastConv int64  // the conversation of the last message, and its seq: a
	lastSeq  int64  // socket sees one conversation (group) or two (direct)
	seqs     map[int64]int64
	other    int64 // events that are not messages (friend requests, group changes, …)
	frames   int64 // WebSocket messages read (a batch counts once)
	err      error // why reading stopped
	done     chan struct{}
}

// errClosedByUs ends the reader of a socket the load generator closed; any
// other error means the socket was dropped.
var errClosedByUs = errors.New("closed by load generator")

// read consumes WebSocket messages until the socket ends (the load
// generator closes every socket it opened). Reading is also what answers the
// server's pings.
//
// It is the load generator's hot path, so it costs little per delivery:
// each message is read into one reused buffer, with a context that has no
// Done channel (a cancellable one costs the library a timer per read), and
// only the fields the accounting needs are decoded, in place, without
// building a karlmalone.v1.Event (see parsePush). JSON subprotocols, for
// comparison, go through encoding/json.
func (t *tracker) read(s *recvSocket, subprotocol string) {
	defer close(s.done)
	s.seqs = make(map[int64]int64)
	decode := decoderFor(subprotocol)
	sink := &socketSink{t: t, s: s}
	var buf []byte
	for {
		_, r, err := s.ws.Reader(context.Background())
		if err == nil {
			buf, err = readMessage(r, buf[:0])
		}
		if err != nil {
			if s.closing.Load() {
				err = errClosedByUs
			}
			s.err = err
			return
		}
		s.frames++
		sink.now, sink.accepted = sinceEpoch(), 0
		if err := decode(buf, sink); err != nil {
			s.err = fmt.Errorf("decode event: %w", err)
			s.ws.Close(websocket.StatusUnsupportedData, "bad event")
			return
		}
		if n := int64(sink.accepted); n > 0 {
			t.received.Add(n)
			if sink.now >= t.windowStart.Load() && sink.now < t.windowEnd.Load() {
				t.inWindow.Add(n)
			}
		}
	}
}

// socketSink accounts for the events of one socket's current message.
type socketSink struct {
	t        *tracker
	s        *recvSocket
	now      int64 // when the message was read
	accepted int   // messages of this run, not duplicates
}

func (k *socketSink) message(p pushed) {
	if k.t.onMessage(k.s, p, k.now) {
		k.accepted++
	}
}

func (k *socketSink) otherEvent() { k.s.other++ }

// readMessage appends all of r to buf, growing it only when a message is
// larger than every one before.
func readMessage(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// onMessage accounts for one pushed message on socket s, received at now.
// It reports whether the message was one of this run's, seen for the first
// time on s.
func (t *tracker) onMessage(s *recvSocket, p pushed, now int64) bool {
	i, ok := t.index(p.clientMsgID)
	if !ok {
		t.foreign.Add(1)
		return false
	}
	if s.seen.has(i) {
		t.dups.Add(1)
		t.note("duplicate: message %d (conversation %d seq %d) twice on socket %d of member %d", i, p.conv, p.seq, s.idx, s.m.idx)
		return false
	}
	s.seen.set(i)
	if s.lastConv != p.conv {
		if s.lastConv != 0 {
			s.seqs[s.lastConv] = s.lastSeq
		}
		s.lastConv, s.lastSeq = p.conv, s.seqs[p.conv]
	}
	if p.seq < s.lastSeq {
		t.unordered.Add(1)
	} else {
		s.lastSeq = p.seq
	}
	r := &t.recs[i]
	r.delivered.Add(1)
	if start := r.start.Load(); start != 0 && p.sender != s.m.id && t.measured(start) {
		t.latency.Record(time.Duration(now - (start - 1)))
	}
	return true
}

// index parses "<prefix><i>" without allocating; ok is false for another
// run's or another client's message.
func (t *tracker) index(clientMsgID []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(clientMsgID, t.prefixBytes)
	if !ok || len(rest) == 0 || len(rest) > 9 {
		return 0, false
	}
	i := 0
	for _, c := range rest {
		if c < '0' || c > '9' {
			return 0, false
		}
		i = i*10 + int(c-'0')
	}
	return i, i < len(t.recs)
}

// bitset is a growable set of small non-negative ints.
type bitset []uint64

func (b bitset) has(i int) bool { return i/64 < len(b) && b[i/64]&(1<<(i%64)) != 0 }

func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

func (b *bitset) set(i int) {
	for i/64 >= len(*b) {
		*b = append(*b, 0)
	}
	(*b)[i/64] |= 1 << (i % 64)
}

// accounting is the final tally of deliveries against expectations.
type accounting struct {
	sent, failed, notStarted int64
	expected, delivered      int64
	missing, dups            int64
	unexpected               int64 // deliveries of sends that reported an error
	foreign, unordered       int64
	frames, events           int64 // WebSocket messages read, and the events they carried
	dropped                  int   // sockets that ended before the load generator closed them
	dropReasons              map[string]int
	examples                 []string
}

// account compares what every socket received with what it should have:
// every successful send, on every socket of every member of its conversation
// (the sender's own devices included, as the server pushes to them too).
// Call it after every reader has returned.
func (t *tracker) account(sockets []*recvSocket, targets func(i int) []*recvSocket, scheduled int) accounting {
	a := accounting{dups: t.dups.Load(), foreign: t.foreign.Load(), unordered: t.unordered.Load(), dropReasons: map[string]int{}}
	t.mu.Lock()
	a.examples = append(a.examples, t.examples...)
	t.mu.Unlock()
	for i := range min(scheduled, len(t.recs)) {
		r := &t.recs[i]
		got := int64(r.delivered.Load())
		switch r.state.Load() {
		case sendOK:
			a.sent++
		case sendFailed:
			a.failed++
			a.unexpected += got
			continue
		default:
			a.notStarted++
			continue
		}
		ts := targets(i)
		a.expected += int64(len(ts))
		a.delivered += got
		if got >= int64(len(ts)) {
			continue
		}
		for _, s := range ts {
			if !s.seen.has(i) {
				a.missing++
				if len(a.examples) < 8 {
					a.examples = append(a.examples, fmt.Sprintf("missing: message %d (conversation %d seq %d, from member %d) on socket %d of member %d (socket: %v)",
						i, r.convID, r.seq, r.senderID, s.idx, s.m.idx, errString(s.err)))
				}
			}
		}
	}
	for _, s := range sockets {
		a.frames += s.frames
		a.events += s.other + int64(s.seen.count())
		if !errors.Is(s.err, errClosedByUs) {
			a.dropped++
			a.dropReasons[closeReason(s.err)]++
		}
	}
	return a
}

func errString(err error) string {
	if err == nil || errors.Is(err, errClosedByUs) {
		return "open to the end"
	}
	return closeReason(err)
}

// closeReason names how a socket ended: its close code, or the error.
func closeReason(err error) string {
	if code := websocket.CloseStatus(err); code != -1 {
		var ce websocket.CloseError
		if errors.As(err, &ce) && ce.Reason != "" {
			return fmt.Sprintf("close %d %q", int(code), ce.Reason)
		}
		return fmt.Sprintf("close %d", int(code))
	}
	if err == nil {
		return "no error"
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}
