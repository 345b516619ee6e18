package push

import (
	"encoding/binary"
	"errors"
)

// The messages nodes exchange over NATS (see natsbus.go and docs/CLUSTER.md).
// Each starts with one kind byte; numbers are unsigned varints, so the member
// ids of a typical message take 3–5 bytes each. The formats are private to
// this package: every node of a cluster runs the same build, and a kind a node
// does not know is dropped (and counted), so a rolling upgrade that adds a
// kind degrades to a resync, never to a crash.
const (
	kindEvent     byte = 1 // ids, then the event's protobuf encoding to the end
	kindRevoke    byte = 2 // session id
	kindDelta     byte = 3 // seq, on (id, age)…, off (id)…
	kindHeartbeat byte = 4 // seq, member count, name
	kindBye       byte = 5 // (nothing)
	kindSnapshot  byte = 6 // node id, node name, seq, part, parts, (id, age)…
	kindSync      byte = 7 // (nothing; the reply subject says where to answer)
	kindResync    byte = 8 // since (Unix ms)
)

var errWire = errors.New("push: malformed bus message")

// memberSince is one online member and since when (Unix milliseconds).
type memberSince struct {
	member int64
	since  int64
}

// An entry carries its age (the sender's now − since, in milliseconds), not
// a time: the receiver takes since = its own now − age. That keeps the varints
// short and makes "since" independent of how far the nodes' clocks disagree
// (it is off by the message's transit time only).

func appendEvent(b []byte, ids []int64, event []byte) []byte {
	b = append(b, kindEvent)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = binary.AppendUvarint(b, uint64(id))
	}
	return append(b, event...)
}

// eventSize bounds the length of appendEvent's output.
func eventSize(ids int, event int) int { return 1 + binary.MaxVarintLen64*(ids+1) + event }

// parseEvent returns the member ids (appended to ids) and the encoded event,
// which aliases b.
func parseEvent(b []byte, ids []int64) ([]int64, []byte, error) {
	r := wireReader{b: b}
	if r.byte() != kindEvent {
		return nil, nil, errWire
	}
	n := r.count(1)
	for range n {
		ids = append(ids, int64(r.uvarint()))
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	return ids, r.b, nil
}

func appendRevoke(b []byte, session int64) []byte {
	return binary.AppendUvarint(append(b, kindRevoke), uint64(session))
}

func parseRevoke(b []byte) (int64, error) {
	r := wireReader{b: b}
	if r.byte() != kindRevoke {
		return 0, errWire
	}
	s := int64(r.uvarint())
	return s, r.done()
}

func appendResync(b []byte, since int64) []byte {
	return binary.AppendUvarint(append(b, kindResync), uint64(since))
}

func parseResync(b []byte) (int64, error) {
	r := wireReader{b: b}
	if r.byte() != kindResync {
		return 0, errWire
	}
	s := int64(r.uvarint())
	return s, r.done()
}

func appendDelta(b []byte, seq uint64, now int64, on []memberSince, off []int64) []byte {
	b = append(b, kindDelta)
	b = binary.AppendUvarint(b, seq)
	b = appendEntries(b, now, on)
	b = binary.AppendUvarint(b, uint64(len(off)))
	for _, id := range off {
		b = binary.AppendUvarint(b, uint64(id))
	}
	return b
}

type delta struct {
	seq uint64
	on  []memberSince
	off []int64
}

// parseDelta decodes a delta received at now (Unix ms).
func parseDelta(b []byte, now int64) (delta, error) {
	r := wireReader{b: b}
	var d delta
	if r.byte() != kindDelta {
		return d, errWire
	}
	d.seq = r.uvarint()
	d.on = r.entries(now)
	n := r.count(1)
	if r.err == nil {
		d.off = make([]int64, 0, n)
	}
	for range n {
		d.off = append(d.off, int64(r.uvarint()))
	}
	return d, r.done()
}

func appendHeartbeat(b []byte, seq uint64, members int, name string) []byte {
	b = append(b, kindHeartbeat)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, uint64(members))
	return append(b, name...)
}

type heartbeat struct {
	seq     uint64
	members int
	name    string
}

func parseHeartbeat(b []byte) (heartbeat, error) {
	r := wireReader{b: b}
	var h heartbeat
	if r.byte() != kindHeartbeat {
		return h, errWire
	}
	h.seq = r.uvarint()
	h.members = int(r.uvarint())
	h.name = string(r.b)
	return h, r.err
}

func appendSnapshot(b []byte, node, name string, seq uint64, part, parts int, now int64, entries []memberSince) []byte {
	b = append(b, kindSnapshot)
	b = binary.AppendUvarint(b, uint64(len(node)))
	b = append(b, node...)
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, uint64(part))
	b = binary.AppendUvarint(b, uint64(parts))
	return appendEntries(b, now, entries)
}

type snapshot struct {
	node, name  string
	seq         uint64
	part, parts int
	entries     []memberSince
}

// parseSnapshot decodes a snapshot part received at now (Unix ms).
func parseSnapshot(b []byte, now int64) (snapshot, error) {
	r := wireReader{b: b}
	var s snapshot
	if r.byte() != kindSnapshot {
		return s, errWire
	}
	s.node = string(r.bytes(r.count(1)))
	s.name = string(r.bytes(r.count(1)))
	s.seq = r.uvarint()
	s.part = int(r.uvarint())
	s.parts = int(r.uvarint())
	s.entries = r.entries(now)
	if r.err == nil && (s.parts < 1 || s.part >= s.parts) {
		r.err = errWire
	}
	return s, r.done()
}

func appendEntries(b []byte, now int64, entries []memberSince) []byte {
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = binary.AppendUvarint(b, uint64(e.member))
		b = binary.AppendUvarint(b, uint64(max(now-e.since, 0)))
	}
	return b
}

// entrySize bounds the encoded size of one memberSince.
const entrySize = 2 * binary.MaxVarintLen64

// wireReader decodes varints, remembering the first error.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) byte() byte {
	if len(r.b) == 0 {
		r.err = errWire
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *wireReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errWire
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length whose items take at least min bytes each, so a
// corrupt length cannot make the caller allocate more than the message holds.
func (r *wireReader) count(min int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/min) {
		r.err = errWire
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

func (r *wireReader) bytes(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.err = errWire
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *wireReader) entries(now int64) []memberSince {
	n := r.count(2)
	if r.err != nil {
		return nil
	}
	out := make([]memberSince, 0, n)
	for range n {
		id := int64(r.uvarint())
		age := int64(r.uvarint())
		out = append(out, memberSince{member: id, since: now - age})
	}
	return out
}

// done reports an error, or trailing bytes after the last field.
func (r *wireReader) done() error {
	if r.err == nil && len(r.b) != 0 {
		return errWire
	}
	return r.err
}
