package push

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

// route splits recipients by the other nodes hosting them, one batch per
// node, and leaves out members no other node hosts.
func TestDirectoryRoute(t *testing.T) {
	d := newDirectory()
	b, _ := d.addPeer("b", "b", "ev.b")
	c, _ := d.addPeer("c", "c", "ev.c")
	d.peerChanged(b, []memberSince{{1, 10}, {2, 10}}, nil, CauseRemote)
	d.peerChanged(c, []memberSince{{2, 5}, {3, 20}}, nil, CauseRemote)
	d.setLocal(4, true, 30)

	got := map[string][]int64{}
	for _, nb := range d.route([]int64{1, 2, 3, 4, 5}) {
		got[nb.subject] = nb.ids
	}
	if want := map[string][]int64{"ev.b": {1, 2}, "ev.c": {2, 3}}; !reflect.DeepEqual(got, want) {
		t.Errorf("route = %v, want %v", got, want)
	}
	if r := d.route([]int64{4, 5}); r != nil {
		t.Errorf("local and offline members routed: %v", r)
	}

	p := d.Presence(1, 2, 4, 5)
	if !p[1].Online || p[1].Nodes != 2 || !p[1].Since.Equal(time.UnixMilli(5)) {
		t.Errorf("member 2: %+v", p[1])
	}
	if !p[2].Online || p[2].Nodes != 1 || p[0].Nodes != 1 || p[3].Online {
		t.Errorf("presence %+v", p)
	}
	if anywhere, here := d.Online(); anywhere != 4 || here != 1 {
		t.Errorf("Online() = %d, %d", anywhere, here)
	}

	// A node's state replaces what was known of it; a node gone takes its
	// members with it, but not those another node still hosts.
	d.replacePeer(b, []memberSince{{2, 10}, {6, 10}})
	d.removePeer(c, 0)
	got = map[string][]int64{}
	for _, nb := range d.route([]int64{1, 2, 3, 6}) {
		got[nb.subject] = nb.ids
	}
	if want := map[string][]int64{"ev.b": {2, 6}}; !reflect.DeepEqual(got, want) {
		t.Errorf("route after changes = %v, want %v", got, want)
	}
	if peers := d.Peers(); len(peers) != 1 || peers[0] != (PeerInfo{ID: "b", Name: "b", Members: 2}) {
		t.Errorf("peers %+v", peers)
	}
}

// Watchers see each member going online or offline anywhere once, with the
// cause, in order; a member's second node or device changes nothing.
func TestDirectoryWatch(t *testing.T) {
	d := newDirectory()
	defer d.close()
	changes := make(chan Change, 100)
	stop := d.Watch(func(c Change) { changes <- c })
	b, _ := d.addPeer("b", "b", "ev.b")

	d.setLocal(1, true, 1)
	d.peerChanged(b, []memberSince{{1, 1}, {2, 2}}, nil, CauseRemote)
	d.setLocal(1, false, 3)                        // still on b
	d.peerChanged(b, nil, []int64{1}, CauseRemote) // now nowhere
	d.removePeer(b, 4)                             // takes 2

	var got []string
	for range 4 {
		c := wait(t, changes)
		got = append(got, fmt.Sprintf("%d %v %v", c.Member, c.Online, c.Cause))
	}
	want := []string{"1 true local", "2 true remote", "1 false remote", "2 false node gone"}
	if !slices.Equal(got, want) {
		t.Errorf("changes %q, want %q", got, want)
	}
	stop()
	d.setLocal(9, true, 5)
	select {
	case c := <-changes:
		t.Errorf("change after stop: %+v", c)
	default:
	}
}

// Announcements: the last change of a member before the bus takes them wins,
// and whoever waited for them is released when the bus has sent them (or
// the bus stops).
func TestDirectoryPending(t *testing.T) {
	d := newDirectory()
	if ch := d.setLocal(1, true, 1); ch != nil {
		t.Fatal("a directory without a bus returned a channel to wait on")
	}
	d.startAnnouncing()
	w1 := d.setLocal(2, true, 2)
	d.setLocal(3, true, 3)
	d.setLocal(3, false, 4)
	on, off, sent := d.takePending()
	if !reflect.DeepEqual(on, []memberSince{{2, 2}}) || !reflect.DeepEqual(off, []int64{3}) || sent != w1 {
		t.Fatalf("pending: %v %v", on, off)
	}
	w2 := d.setLocal(4, true, 5)
	if w2 == w1 {
		t.Fatal("a change after takePending waits for the batch already taken")
	}
	close(sent)
	d.stopAnnouncing()
	wait(t, w2) // released: no bus will send it
}
