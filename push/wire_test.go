package push

import (
	"bytes"
	"reflect"
	"testing"
)

func TestWireRoundTrip(t *testing.T) {
	const now = 1_800_000_000_000
	entries := []memberSince{{1, now}, {1 << 40, now - 5000}, {300, now - 1}}

	ids, ev, err := parseEvent(appendEvent(nil, []int64{1, 1 << 40, 127, 128}, []byte("event bytes")), nil)
	if err != nil || !reflect.DeepEqual(ids, []int64{1, 1 << 40, 127, 128}) || string(ev) != "event bytes" {
		t.Errorf("event: %v %q %v", ids, ev, err)
	}
	if got := eventSize(4, len("event bytes")); got < len(appendEvent(nil, []int64{1, 1 << 40, 127, 128}, []byte("event bytes"))) {
		t.Errorf("eventSize %d too small", got)
	}
	if s, err := parseRevoke(appendRevoke(nil, 42)); s != 42 || err != nil {
		t.Errorf("revoke: %d %v", s, err)
	}
	d, err := parseDelta(appendDelta(nil, 7, now, entries, []int64{9, 10}), now+2)
	// Ages travel, not times: the receiver's clock 2 ms ahead shifts "since" by 2 ms.
	want := delta{seq: 7, on: []memberSince{{1, now + 2}, {1 << 40, now - 4998}, {300, now + 1}}, off: []int64{9, 10}}
	if err != nil || !reflect.DeepEqual(d, want) {
		t.Errorf("delta: %+v %v", d, err)
	}
	if d, err := parseDelta(appendDelta(nil, 1, now, nil, nil), now); err != nil || d.seq != 1 || len(d.on)+len(d.off) != 0 {
		t.Errorf("empty delta: %+v %v", d, err)
	}
	if h, err := parseHeartbeat(appendHeartbeat(nil, 5, 3, "node-1")); err != nil || h != (heartbeat{5, 3, "node-1"}) {
		t.Errorf("heartbeat: %+v %v", h, err)
	}
	s, err := parseSnapshot(appendSnapshot(nil, "abc", "node-1", 9, 1, 2, now, entries), now)
	if err != nil || s.node != "abc" || s.name != "node-1" || s.seq != 9 || s.part != 1 || s.parts != 2 || !reflect.DeepEqual(s.entries, entries) {
		t.Errorf("snapshot: %+v %v", s, err)
	}
}

// Every truncation or corruption of a valid message is refused, never a
// panic or a huge allocation.
func TestWireMalformed(t *testing.T) {
	const now = 1_800_000_000_000
	msgs := [][]byte{
		appendEvent(nil, []int64{1, 2}, nil),
		appendRevoke(nil, 1<<50),
		appendDelta(nil, 3, now, []memberSince{{5, now}}, []int64{6}),
		appendSnapshot(nil, "id", "name", 1, 0, 1, now, []memberSince{{5, now}}),
	}
	parse := []func([]byte) error{
		func(b []byte) error { _, _, err := parseEvent(b, nil); return err },
		func(b []byte) error { _, err := parseRevoke(b); return err },
		func(b []byte) error { _, err := parseDelta(b, now); return err },
		func(b []byte) error { _, err := parseSnapshot(b, now); return err },
	}
	for i, m := range msgs {
		if err := parse[i](m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		for n := range len(m) - 1 {
			if i == 0 && n >= 3 { // an event's tail is the opaque event itself
				continue
			}
			if err := parse[i](m[:n]); err == nil {
				t.Errorf("message %d cut to %d bytes parsed", i, n)
			}
		}
		if i != 0 {
			if err := parse[i](append(bytes.Clone(m), 0)); err == nil {
				t.Errorf("message %d with a trailing byte parsed", i)
			}
		}
		if err := parse[(i+1)%len(parse)](m); err == nil {
			t.Errorf("message %d parsed as the next kind", i)
		}
	}
	// A count larger than the message could hold is refused before allocating.
	if _, _, err := parseEvent([]byte{kindEvent, 0xff, 0xff, 0xff, 0xff, 0x0f}, nil); err == nil {
		t.Error("event claiming 4G ids parsed")
	}
	if _, err := parseSnapshot(appendSnapshot(nil, "id", "", 1, 2, 2, now, nil), now); err == nil {
		t.Error("snapshot part 2 of 2 parsed")
	}
}

func TestRedactURLs(t *testing.T) {
	got := redactURLs("nats://user:secret@a:4222, nats://b:4222,tls://tok@c")
	if want := "nats://redacted@a:4222, nats://b:4222,tls://redacted@c"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
