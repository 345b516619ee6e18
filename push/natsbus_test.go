package push

import (
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/karlmalone/karlmalone/internal/natstest"
)

// Several hubs joined by a real NATS server in the test process: nodes of a
// cluster. Each node reaches NATS through a proxy of its own, which a test
// cuts to kill the node as far as the others can tell.

type node struct {
	*env
	bus     *NATSBus
	proxy   *natstest.Proxy
	changes chan Change // every presence change its directory reported
}

func newStringEvent() proto.Message { return new(wrapperspb.StringValue) }

// fastNATS shrinks the bus's timers so that tests of expiry take a fraction
// of a second.
func fastNATS(url, name string) NATSConfig {
	return NATSConfig{
		URL: url, Name: name,
		Heartbeat: 50 * time.Millisecond, Expiry: 300 * time.Millisecond,
		AnnounceDelay: time.Millisecond, ReconnectWait: 20 * time.Millisecond,
	}
}

func newNode(t *testing.T, ns *natstest.Server, name string, tune ...func(*NATSConfig)) *node {
	return newNodeHub(t, ns, name, Config{}, tune...)
}

// newNodeHub is newNode with more of the hub's config.
func newNodeHub(t *testing.T, ns *natstest.Server, name string, hub Config, tune ...func(*NATSConfig)) *node {
	t.Helper()
	p := ns.Proxy()
	cfg := fastNATS(p.URL, name)
	for _, f := range tune {
		f(&cfg)
	}
	bus := NewNATSBus(cfg, testLogger())
	hub.Bus, hub.NewEvent = bus, newStringEvent
	hub.ResyncEvent = func(time.Time) proto.Message { return wrapperspb.String("resync") }
	n := &node{env: newEnv(t, hub, nil), bus: bus, proxy: p,
		changes: make(chan Change, 4096)}
	t.Cleanup(n.hub.Directory().Watch(func(c Change) { n.changes <- c }))
	if err := bus.nc.Flush(); err != nil { // its subscriptions are on the server
		t.Fatal(err)
	}
	return n
}

// cluster starts nodes and waits until each knows all the others.
func cluster(t *testing.T, ns *natstest.Server, names ...string) []*node {
	t.Helper()
	nodes := make([]*node, len(names))
	for i, name := range names {
		nodes[i] = newNode(t, ns, name)
	}
	for _, n := range nodes {
		eventually(t, "every node knows every other", func() bool { return n.bus.Stats().Peers == len(nodes)-1 })
	}
	return nodes
}

// eventually polls cond, for states no event announces (a peer count, a
// counter), for at most waitFor.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitChange waits for the node's directory to report member going online or
// offline, skipping other changes, and returns it.
func (n *node) waitChange(t testing.TB, member int64, online bool) Change {
	t.Helper()
	return n.waitChanges(t, online, member)[member]
}

// waitChanges waits for changes of several members, in any order.
func (n *node) waitChanges(t testing.TB, online bool, members ...int64) map[int64]Change {
	t.Helper()
	got := make(map[int64]Change, len(members))
	for len(got) < len(members) {
		c := wait(t, n.changes)
		if c.Online == online && slices.Contains(members, c.Member) {
			got[c.Member] = c
		}
	}
	return got
}

func (n *node) presence(member int64) Presence { return n.hub.Directory().Presence(member)[0] }

// A message published on one node reaches every receiver of its recipients
// on every node, in each receiver's encoding, exactly once; each node gets one
// bus message per event; a node hosting none of the recipients gets nothing.
func TestNATSDeliveryAcrossNodes(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	nodes := cluster(t, ns, "a", "b", "c", "d")
	a, b, c, d := nodes[0], nodes[1], nodes[2], nodes[3]

	bProto := b.dial(t, 1, 10, SubprotocolProto)
	bJSON := b.dial(t, 1, 11, SubprotocolJSON)
	cSub, err := c.hub.Subscribe(t.Context(), Principal{MemberID: 2, SessionID: 20})
	if err != nil {
		t.Fatal(err)
	}
	cAlso := c.dial(t, 1, 12) // member 1 on two nodes
	aLocal := a.dial(t, 3, 30)
	d.dial(t, 5, 50) // not addressed
	for _, m := range []int64{1, 2, 5} {
		a.waitChange(t, m, true)
	}

	for _, text := range []string{"hello", "sentinel"} {
		a.hub.Publish([]int64{1, 2, 3, 4}, wrapperspb.String(text))
		for name, ws := range map[string]*websocket.Conn{"b proto": bProto, "b json": bJSON, "c": cAlso, "a": aLocal} {
			if got := readString(t, ws); got != text {
				t.Errorf("%s got %q, want %q", name, got, text)
			}
		}
		ev, err := cSub.Next(t.Context())
		if err != nil || ev.(*wrapperspb.StringValue).GetValue() != text {
			t.Errorf("subscription got %v, %v; want %q", ev, err, text)
		}
	}
	if got := a.bus.Stats().EventsSent; got != 4 { // 2 events × {b, c}
		t.Errorf("a sent %d bus messages, want 4", got)
	}
	for _, n := range []*node{b, c} {
		if got := n.bus.Stats().EventsReceived; got != 2 {
			t.Errorf("%s received %d bus messages, want 2", n.bus.cfg.Name, got)
		}
	}
	if s := d.bus.Stats(); s.EventsReceived != 0 {
		t.Errorf("d, hosting no recipient, received %d bus messages", s.EventsReceived)
	}
	if s := a.bus.Stats(); s.EventsReceived != 0 || s.EventsDropped != 0 || s.BadMessages != 0 {
		t.Errorf("a: %+v", s)
	}
}

// A socket (or stream) does not finish opening on a node before the other
// nodes can route to its member: the announcement is on NATS by then. A
// client can connect, then read history, and miss nothing published anywhere
// in between.
func TestNATSAnnouncedBeforeSocketOpens(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	// A long gathering delay: without the wait, the socket would open well
	// before the announcement left.
	b := newNode(t, ns, "b", func(c *NATSConfig) { c.AnnounceDelay = 200 * time.Millisecond })
	watcher, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	sub, err := watcher.SubscribeSync(b.bus.subjDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}
	for i, open := range []func(){
		func() { b.dial(t, 1, 1) },
		func() {
			if _, err := b.hub.Subscribe(t.Context(), Principal{MemberID: 2, SessionID: 2}); err != nil {
				t.Fatal(err)
			}
		},
	} {
		member := int64(i + 1)
		open()
		// What NATS had before the socket opened reaches the watcher before
		// the answer to its ping.
		if err := watcher.Flush(); err != nil {
			t.Fatal(err)
		}
		found := false
		for n, _, _ := sub.Pending(); n > 0 && !found; n-- {
			m, err := sub.NextMsg(0)
			if err != nil {
				t.Fatal(err)
			}
			if d, err := parseDelta(m.Data, 0); err == nil {
				found = slices.ContainsFunc(d.on, func(e memberSince) bool { return e.member == member })
			}
		}
		if !found {
			t.Fatalf("member %d's receiver opened before its announcement was on NATS", member)
		}
	}
}

// Closing a session on one node closes its sockets and streams on every
// node, and nothing else; the other nodes hear of it (to drop their caches).
func TestNATSCloseSessionAcrossNodes(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	revoked := make(chan int64, 10)
	a, b, c := newNodeHub(t, ns, "a", Config{}), newNodeHub(t, ns, "b", Config{}), newNodeHub(t, ns, "c", Config{})
	for _, n := range []*node{b, c} {
		n.hub.WatchSessions(SessionWatch{Revoked: func(id int64) { revoked <- id }})
	}
	for _, n := range []*node{a, b, c} {
		eventually(t, "every node knows every other", func() bool { return n.bus.Stats().Peers == 2 })
	}
	onB := b.dial(t, 1, 10)
	onC := c.dial(t, 1, 10)
	sub, err := c.hub.Subscribe(t.Context(), Principal{MemberID: 1, SessionID: 10})
	if err != nil {
		t.Fatal(err)
	}
	other := c.dial(t, 1, 11) // another device of the same member

	a.hub.CloseSession(10) // a hosts none of it
	for _, ws := range []*websocket.Conn{onB, onC} {
		closedWith(t, readClose(t, ws), StatusSessionRevoked, "session revoked")
	}
	if _, err := sub.Next(t.Context()); err != ErrSessionRevoked {
		t.Errorf("subscription ended with %v, want ErrSessionRevoked", err)
	}
	if got := []int64{wait(t, revoked), wait(t, revoked)}; got[0] != 10 || got[1] != 10 {
		t.Errorf("b and c were told of %v, want session 10 twice", got)
	}
	select {
	case id := <-revoked:
		t.Errorf("told of session %d once more (b and c, once each)", id)
	default:
	}
	if got := c.hub.Sessions(); len(got) != 1 || got[0] != 11 {
		t.Errorf("c hosts sessions %v, want [11]", got)
	}
	c.hub.Publish([]int64{1}, wrapperspb.String("still here"))
	if got := readString(t, other); got != "still here" {
		t.Errorf("the other session's socket got %q", got)
	}
	if s := a.bus.Stats(); s.RevocationsSent != 1 {
		t.Errorf("a: %+v", s)
	}
}

// Presence: every node learns who is online where, and since when; a member
// online on two nodes is offline once both have let go; a node that dies
// takes its members offline everywhere within Expiry+Heartbeat.
func TestNATSPresence(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	nodes := cluster(t, ns, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]

	before := time.Now()
	onB := b.dial(t, 7, 70)
	if got := b.waitChange(t, 7, true); got.Cause != CauseLocal {
		t.Errorf("b: %+v, want cause local", got)
	}
	if got := a.waitChange(t, 7, true); got.Cause != CauseRemote {
		t.Errorf("a: %+v, want cause remote", got)
	}
	p := a.presence(7)
	if !p.Online || p.Nodes != 1 || p.Since.Before(before.Add(-time.Second)) || p.Since.After(time.Now()) {
		t.Errorf("a sees %+v", p)
	}
	if p := a.presence(8); p.Online || !p.Since.IsZero() {
		t.Errorf("a sees %+v for a member never online", p)
	}

	onC := c.dial(t, 7, 71)
	eventually(t, "a sees member 7 on two nodes", func() bool { return a.presence(7).Nodes == 2 })
	onB.Close(1000, "bye")
	eventually(t, "a sees member 7 on one node", func() bool { return a.presence(7).Nodes == 1 })
	onC.Close(1000, "bye")
	if got := a.waitChange(t, 7, false); got.Cause != CauseRemote {
		t.Errorf("a: %+v, want cause remote", got)
	}
	if p := a.presence(7); p.Online {
		t.Errorf("a sees %+v after both sockets closed", p)
	}

	// c dies (as far as the others can tell: it loses NATS for good).
	c.dial(t, 9, 90)
	a.waitChange(t, 9, true)
	b.waitChange(t, 9, true)
	c.proxy.Cut()
	for _, n := range []*node{a, b} {
		if got := n.waitChange(t, 9, false); got.Cause != CauseNodeGone {
			t.Errorf("%+v, want cause node gone", got)
		}
		eventually(t, "c is forgotten", func() bool { return n.bus.Stats().Peers == 1 })
	}
}

// A node that starts learns who is online on the nodes already running.
func TestNATSNewNodeLearnsState(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	nodes := cluster(t, ns, "a", "b")
	nodes[0].dial(t, 1, 1)
	nodes[1].dial(t, 2, 2)
	nodes[1].waitChange(t, 1, true)
	nodes[0].waitChange(t, 2, true)

	c := newNode(t, ns, "c")
	// (Its directory may report the changes before the test can watch it.)
	eventually(t, "c knows members 1 and 2", func() bool { return c.presence(1).Online && c.presence(2).Online })
	if anywhere, here := c.hub.Directory().Online(); anywhere != 2 || here != 0 {
		t.Errorf("c counts %d online, %d here", anywhere, here)
	}
}

// NATS going away leaves each node serving its own members; events for
// members elsewhere are dropped and counted; after NATS comes back the nodes
// reconnect by themselves, push crosses nodes again, and every client that may
// have missed something is told to resync.
func TestNATSServerRestart(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	nodes := cluster(t, ns, "a", "b")
	a, b := nodes[0], nodes[1]
	remote := b.dial(t, 1, 1)
	local := a.dial(t, 2, 2)
	a.waitChange(t, 1, true)

	ns.Stop()
	eventually(t, "a notices", func() bool { return !a.bus.Stats().Connected })
	a.hub.Publish([]int64{1, 2}, wrapperspb.String("during"))
	if got := readString(t, local); got != "during" {
		t.Errorf("local socket got %q", got)
	}
	s := a.bus.Stats()
	if s.EventsDropped != 1 || s.Disconnects != 1 || s.Connected {
		t.Errorf("a while NATS is down: %+v", s)
	}
	// Silence means nothing while a node cannot hear: no one expires, for
	// longer than the expiry, so a NATS blip does not take everyone offline.
	quiet := time.After(3 * a.bus.cfg.Expiry)
	for waiting := true; waiting; {
		select {
		case c := <-a.changes:
			if !c.Online {
				t.Fatalf("a took member %d offline while it could not hear: %+v", c.Member, c)
			}
		case <-quiet:
			waiting = false
		}
	}
	if p := a.presence(1); !p.Online {
		t.Errorf("a forgot member 1 while it could not hear: %+v", p)
	}
	b.hub.CloseSession(99) // no one hears it; nothing breaks

	ns.Start()
	for _, n := range nodes {
		eventually(t, "reconnected", func() bool { s := n.bus.Stats(); return s.Connected && s.Reconnects == 1 })
		if err := n.bus.nc.Flush(); err != nil { // its subscriptions are on the server
			t.Fatal(err)
		}
	}
	a.hub.Publish([]int64{1}, wrapperspb.String("after"))
	// The remote socket hears from its own node (which lost NATS too) and
	// from a (which dropped its event); the local one from a.
	for name, ws := range map[string]*websocket.Conn{"remote": remote, "local": local} {
		want := map[string]bool{"resync": true}
		if name == "remote" {
			want["after"] = true
		}
		for len(want) > 0 {
			got := readString(t, ws)
			if !want[got] && got != "resync" {
				t.Fatalf("%s socket got %q, want %v", name, got, want)
			}
			delete(want, got)
		}
	}
}

// The directory protocol, against a fake node speaking raw NATS: a node is
// asked for its state when first heard from, its changes apply in seq order,
// a gap makes the directory ask again (ignoring changes until the state
// arrives), and a goodbye takes its members offline at once.
func TestNATSDirectoryProtocol(t *testing.T) {
	t.Parallel()
	ns := natstest.New(t)
	a := newNode(t, ns, "a", func(c *NATSConfig) { c.Heartbeat = time.Hour }) // no expiry here
	fake, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	const id = "00000000fa4e0000"
	asks, err := fake.SubscribeSync("karlmalone.sync." + id)
	if err != nil {
		t.Fatal(err)
	}
	fake.Flush()
	now := time.Now().UnixMilli()
	send := func(b []byte) {
		t.Helper()
		if err := fake.Publish("karlmalone.dir."+id, b); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(seq uint64, members ...int64) {
		t.Helper()
		m, err := asks.NextMsg(waitFor)
		if err != nil {
			t.Fatalf("no request for the fake node's state: %v", err)
		}
		var state []memberSince
		for _, x := range members {
			state = append(state, memberSince{x, now})
		}
		if err := fake.Publish(m.Reply, appendSnapshot(nil, id, "fake", seq, 0, 1, now, state)); err != nil {
			t.Fatal(err)
		}
	}

	send(appendHeartbeat(nil, 0, 1, "fake"))
	answer(0, 100)
	if got := a.waitChange(t, 100, true); got.Cause != CauseSync {
		t.Errorf("%+v", got)
	}
	send(appendDelta(nil, 1, now, []memberSince{{101, now}}, nil))
	if got := a.waitChange(t, 101, true); got.Cause != CauseRemote {
		t.Errorf("%+v", got)
	}
	send(appendDelta(nil, 3, now, []memberSince{{103, now}}, []int64{100})) // seq 2 lost
	answer(3, 101, 103)
	// 100 leaves and 103 arrives by the state, not by the change after the
	// gap (the directory reports a state's changes in no particular order).
	for _, c := range []Change{a.waitChange(t, 100, false), a.waitChange(t, 103, true)} {
		if c.Cause != CauseSync {
			t.Errorf("%+v", c)
		}
	}

	// Events for a's members: delivered; garbage: counted and dropped.
	ws := a.dial(t, 5, 5)
	ev, _ := proto.Marshal(wrapperspb.String("from the fake"))
	fake.Publish(a.bus.subjEvents, []byte{0xff, 1, 2})
	fake.Publish(a.bus.subjEvents, appendEvent(nil, []int64{5, 6}, ev))
	if got := readString(t, ws); got != "from the fake" {
		t.Errorf("got %q", got)
	}
	if s := a.bus.Stats(); s.BadMessages != 1 || s.EventsReceived != 1 {
		t.Errorf("%+v", s)
	}

	send([]byte{kindBye})
	for _, c := range a.waitChanges(t, false, 101, 103) {
		if c.Cause != CauseNodeGone {
			t.Errorf("%+v", c)
		}
	}
}
