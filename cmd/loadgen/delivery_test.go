package main

import (
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestAccountingFindsMissingAndDuplicates feeds the tracker pushed messages
// by hand: every expected (message, socket) pair not received is missing,
// a second receipt is a duplicate, foreign ids are set apart, and only
// receipts by members other than the sender enter the latency histogram.
func TestAccountingFindsMissingAndDuplicates(t *testing.T) {
	t.Parallel()
	tr := newTracker(4)
	now := sinceEpoch()
	tr.windowStart.Store(now - int64(time.Second))
	tr.windowEnd.Store(now + int64(time.Hour))
	alice, bob := &member{idx: 0, id: 10}, &member{idx: 1, id: 11}
	sa := &recvSocket{idx: 0, m: alice, seqs: map[int64]int64{}, err: errClosedByUs}
	sb := &recvSocket{idx: 1, m: bob, seqs: map[int64]int64{},
		err: websocket.CloseError{Code: websocket.StatusPolicyViolation, Reason: "too slow: resync"}}
	sockets := []*recvSocket{sa, sb}
	for i := range 3 {
		r := &tr.recs[i]
		r.senderID, r.convID, r.seq = alice.id, 7, int64(i+1)
		r.start.Store(now + 1)
		r.state.Store(sendOK)
	}
	tr.recs[3].state.Store(sendFailed)
	msg := func(i int) pushed {
		return pushed{conv: 7, seq: int64(i + 1), sender: alice.id, clientMsgID: []byte(tr.clientMsgID(i))}
	}
	at := now + int64(5*time.Millisecond)
	tr.onMessage(sa, msg(0), at) // the sender's own device: delivered, no latency sample
	tr.onMessage(sb, msg(0), at)
	tr.onMessage(sa, msg(1), at)
	tr.onMessage(sa, msg(1), at) // duplicate
	tr.onMessage(sa, msg(3), at) // a send that reported an error, delivered anyway
	tr.onMessage(sb, pushed{clientMsgID: []byte("someone-else-1")}, at)

	a := tr.account(sockets, func(int) []*recvSocket { return sockets }, 4)
	if a.sent != 3 || a.failed != 1 || a.expected != 6 || a.delivered != 3 {
		t.Errorf("sent %d failed %d expected %d delivered %d; want 3 1 6 3", a.sent, a.failed, a.expected, a.delivered)
	}
	if a.missing != 3 { // message 1 on bob's socket, message 2 on both
		t.Errorf("missing %d, want 3", a.missing)
	}
	if a.dups != 1 || a.foreign != 1 || a.unexpected != 1 {
		t.Errorf("dups %d foreign %d unexpected %d; want 1 1 1", a.dups, a.foreign, a.unexpected)
	}
	if a.dropped != 1 || a.dropReasons[`close 1008 "too slow: resync"`] != 1 {
		t.Errorf("dropped %d reasons %v", a.dropped, a.dropReasons)
	}
	if n := tr.latency.Count(); n != 1 {
		t.Errorf("latency samples %d, want 1 (bob's receipt of message 0)", n)
	}
	if got := tr.latency.Max(); got != 5*time.Millisecond {
		t.Errorf("latency %v, want 5ms", got)
	}
	var sawMissing bool
	for _, e := range a.examples {
		sawMissing = sawMissing || strings.HasPrefix(e, "missing: message 2")
	}
	if !sawMissing {
		t.Errorf("no example of the missing message 2 in %q", a.examples)
	}
}
