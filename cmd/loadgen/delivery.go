package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
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
	recs        []sendRec
	windowStart atomic.Int64 // sinceEpoch; sends started in [windowStart, windowEnd) are measured
	windowEnd   atomic.Int64

	latency   Histogram // send start → receipt by a member other than the sender, measured sends
	sendRPC   Histogram // SendMessage round trip, measured sends
	received  atomic.Int64
	inWindow  atomic.Int64 // deliveries received inside the window
	expected  atomic.Int64 // sum over successful sends of their target sockets
	dups      atomic.Int64
	foreign   atomic.Int64 // message events that are not ours (another run, another client)
	unordered atomic.Int64

	mu       sync.Mutex
	examples []string // a few duplicates, for the report
}

func newTracker(n int) *tracker {
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	return &tracker{prefix: "lg" + run + "-", recs: make([]sendRec, n)}
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
	seen    map[uint32]struct{}
	lastSeq map[int64]int64
	other   int64 // events that are not messages (friend requests, group changes, …)
	err     error // why reading stopped
	done    chan struct{}
}

// errClosedByUs ends the reader of a socket the load generator closed; any
// other error means the socket was dropped.
var errClosedByUs = errors.New("closed by load generator")

// read consumes events until the socket ends. Reading is also what answers
// the server's pings.
func (t *tracker) read(ctx context.Context, s *recvSocket) {
	defer close(s.done)
	s.seen = make(map[uint32]struct{})
	s.lastSeq = make(map[int64]int64)
	for {
		_, data, err := s.ws.Read(ctx)
		if err != nil {
			if ctx.Err() != nil || s.closing.Load() {
				err = errClosedByUs
			}
			s.err = err
			return
		}
		now := sinceEpoch()
		ev := &v1.Event{}
		if err := proto.Unmarshal(data, ev); err != nil {
			s.err = fmt.Errorf("decode event: %w", err)
			s.ws.Close(websocket.StatusUnsupportedData, "bad event")
			return
		}
		msg := ev.GetMessage()
		if msg == nil {
			s.other++
			continue
		}
		t.onMessage(s, msg, now)
	}
}

func (t *tracker) onMessage(s *recvSocket, msg *v1.Message, now int64) {
	rest, ok := strings.CutPrefix(msg.GetClientMsgId(), t.prefix)
	i, err := strconv.Atoi(rest)
	if !ok || err != nil || i < 0 || i >= len(t.recs) {
		t.foreign.Add(1)
		return
	}
	if _, dup := s.seen[uint32(i)]; dup {
		t.dups.Add(1)
		t.note("duplicate: message %d (conversation %d seq %d) twice on socket %d of member %d", i, msg.GetConversationId(), msg.GetSeq(), s.idx, s.m.idx)
		return
	}
	s.seen[uint32(i)] = struct{}{}
	if last := s.lastSeq[msg.GetConversationId()]; msg.GetSeq() < last {
		t.unordered.Add(1)
	} else {
		s.lastSeq[msg.GetConversationId()] = msg.GetSeq()
	}
	r := &t.recs[i]
	r.delivered.Add(1)
	t.received.Add(1)
	if now >= t.windowStart.Load() && now < t.windowEnd.Load() {
		t.inWindow.Add(1)
	}
	if start := r.start.Load(); start != 0 && msg.GetSenderId() != s.m.id && t.measured(start) {
		t.latency.Record(time.Duration(now - (start - 1)))
	}
}

// accounting is the final tally of deliveries against expectations.
type accounting struct {
	sent, failed, notStarted int64
	expected, delivered      int64
	missing, dups            int64
	unexpected               int64 // deliveries of sends that reported an error
	foreign, unordered       int64
	dropped                  int // sockets that ended before the load generator closed them
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
			if _, ok := s.seen[uint32(i)]; !ok {
				a.missing++
				if len(a.examples) < 8 {
					a.examples = append(a.examples, fmt.Sprintf("missing: message %d (conversation %d seq %d, from member %d) on socket %d of member %d (socket: %v)",
						i, r.convID, r.seq, r.senderID, s.idx, s.m.idx, errString(s.err)))
				}
			}
		}
	}
	for _, s := range sockets {
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
