package server_test

// Several nodes, one service: three servers (server.New) over one database,
// each with its own push hub on a NATS bus, a NATS server in the test process,
// and one S3 store (gofakes3) for attachments. Each node reaches NATS through
// a proxy of its own, which a test cuts to kill the node as far as the others
// can tell. Clients talk to whichever node the test says, as behind a load
// balancer without sticky sessions.

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/coder/websocket"
	"github.com/karlmalone/karlmalone/attachment"
	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/internal/natstest"
	"github.com/karlmalone/karlmalone/internal/s3test"
	"github.com/karlmalone/karlmalone/internal/testdb"
	"github.com/karlmalone/karlmalone/push"
	"github.com/karlmalone/karlmalone/server"
)

type clusterNode struct {
	*env
	bus   *push.NATSBus
	proxy *natstest.Proxy
}

type cluster struct {
	nats  *natstest.Server
	s3    *s3test.Server
	nodes []*clusterNode
}

// withAttachments stores uploads in s instead of a local directory.
func withAttachments(s attachment.Store) envOption {
	return func(d *server.Deps) { d.Attachments = s }
}

// newCluster starts n nodes and waits until each knows the others. The bus's
// timers are shrunk (a node silent for 300 ms is dead) so that tests of
// failures take a fraction of a second.
func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	cl := &cluster{nats: natstest.New(t), s3: s3test.New(t)}
	pool := testdb.New(t)
	for i := range n {
		p := cl.nats.Proxy()
		node := &clusterNode{proxy: p}
		node.env = newEnv(t, withPool(pool), withAttachments(cl.s3.Store(t)), func(d *server.Deps) {
			node.bus = push.NewNATSBus(push.NATSConfig{
				URL: p.URL, Name: fmt.Sprintf("node-%c", 'a'+i),
				Heartbeat: 50 * time.Millisecond, Expiry: 300 * time.Millisecond,
				AnnounceDelay: time.Millisecond, ReconnectWait: 20 * time.Millisecond,
			}, d.Log)
			d.Hub = push.NewHub(server.PushEvents(push.Config{Bus: node.bus}), d.Log)
		})
		cl.nodes = append(cl.nodes, node)
	}
	for _, node := range cl.nodes {
		waitFor(t, "every node knows the others", func() bool { return node.busStats().Peers == n-1 })
	}
	return cl
}

func (n *clusterNode) busStats() push.BusStats {
	s, _ := n.Hub.BusStats()
	return s
}

// as is c signed in on node n: the same session, with clients for n's address.
func (n *clusterNode) as(c *client) *client {
	out := n.clients(c.Token)
	out.ID, out.Phone, out.Password, out.SessionID = c.ID, c.Phone, c.Password, c.SessionID
	return out
}

// waitHosts waits until node n's directory shows member on hosts nodes.
func (n *clusterNode) waitHosts(t testing.TB, member int64, hosts int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("member %d on %d nodes", member, hosts), func() bool {
		return n.Hub.Directory().Presence(member)[0].Nodes == hosts
	})
}

// A message sent through one node reaches its recipient's sockets on the
// other two exactly once, for one bus message per node.
func TestClusterDirectMessage(t *testing.T) {
	t.Parallel()
	cl := newCluster(t, 3)
	a, b, c := cl.nodes[0], cl.nodes[1], cl.nodes[2]
	ann, bob := a.register(t, "ann"), a.register(t, "bob")
	makeContacts(t, ann, bob)
	onB, onC := b.connect(t, b.as(bob)), c.connect(t, c.as(bob))
	a.waitHosts(t, bob.ID, 2)
	sentBefore := a.busStats().EventsSent

	first := chatSend(t, ann, peerText(bob.ID, "x1", "hello from node a"))
	second := chatSend(t, ann, peerText(bob.ID, "x2", "and again"))
	// A duplicate of the first would arrive before the second.
	wantMessages(t, map[string]*events{"b": onB, "c": onC}, first, second)
	if got := a.busStats().EventsSent - sentBefore; got != 4 {
		t.Errorf("node a sent %d bus messages for 2 messages to a member on 2 other nodes, want 4", got)
	}
}

// A group spanning three nodes: a message sent through any node reaches every
// member's socket once, and the sending node sends one bus message per other
// node, whatever the number of members there.
func TestClusterGroup(t *testing.T) {
	t.Parallel()
	cl := newCluster(t, 3)
	a, b, c := cl.nodes[0], cl.nodes[1], cl.nodes[2]
	owner := a.register(t, "owner")
	members := []*client{a.register(t, "m-a"), a.register(t, "m-b1"), a.register(t, "m-b2"), a.register(t, "m-c")}
	g := newGroup(t, owner, members...)
	home := []*clusterNode{a, b, b, c}
	socks := make([]*events, len(members))
	for i, m := range members {
		socks[i] = home[i].connect(t, home[i].as(m))
	}
	for _, m := range members {
		b.waitHosts(t, m.ID, 1)
	}
	sentBefore := b.busStats().EventsSent

	sender := b.as(members[1])
	var sent []*v1.Message
	for i := range 3 {
		sent = append(sent, chatSend(t, sender, groupText(g.GetId(), fmt.Sprintf("g%d", i), fmt.Sprintf("group message %d", i))))
	}
	named := make(map[string]*events)
	for i, s := range socks {
		named[fmt.Sprintf("member %d", i)] = s
	}
	wantMessages(t, named, sent...)
	if got := b.busStats().EventsSent - sentBefore; got != 6 {
		t.Errorf("node b sent %d bus messages for 3 messages to members on 2 other nodes, want 6", got)
	}
}

// Logout through one node closes the session's sockets and Subscribe streams
// on the others (the harness waits 10 s at most; the bus takes milliseconds),
// and leaves the member's other sessions open.
func TestClusterLogoutClosesEverywhere(t *testing.T) {
	t.Parallel()
	cl := newCluster(t, 3)
	a, b, c := cl.nodes[0], cl.nodes[1], cl.nodes[2]
	m := a.register(t, "leaver")
	other := a.login(t, m.Phone, m.Password) // a second device

	onA := a.connect(t, m)
	onC := c.connect(t, c.as(m))
	stream := subscribe(t, c.env, c.as(m).Chat)
	otherOnA := a.connect(t, other)

	if _, err := b.as(m).Members.Logout(t.Context(), &v1.LogoutRequest{}); err != nil {
		t.Fatal(err)
	}
	onA.wantClosed(push.StatusSessionRevoked)
	onC.wantClosed(push.StatusSessionRevoked)
	for stream.Receive() { // the revocation's own event may come first
		if stream.Msg().GetEvent().GetSessionRevoked() == nil {
			t.Fatalf("stream yielded %v after logout", stream.Msg())
		}
	}
	wantCode(t, stream.Err(), connect.CodeUnauthenticated)
	// The other device hears of it and stays open.
	if got := otherOnA.next(); got.GetSessionRevoked().GetSessionId() != m.SessionID {
		t.Errorf("other device got %v, want the revocation of session %d", got, m.SessionID)
	}
}

// Presence across nodes: every node sees a member online on another; when a
// node dies its members go offline everywhere within Expiry+Heartbeat (here
// 350 ms; 13 s with the defaults).
func TestClusterPresence(t *testing.T) {
	t.Parallel()
	cl := newCluster(t, 3)
	a, b, c := cl.nodes[0], cl.nodes[1], cl.nodes[2]
	changes := make(chan push.Change, 100)
	t.Cleanup(a.Hub.Directory().Watch(func(ch push.Change) { changes <- ch }))
	m := a.register(t, "mover")
	before := time.Now()
	ws := b.connect(t, b.as(m))
	for _, n := range []*clusterNode{a, c} {
		n.waitHosts(t, m.ID, 1)
		if p := n.Hub.Directory().Presence(m.ID)[0]; !p.Online || p.Since.Before(before.Add(-time.Second)) {
			t.Errorf("presence %+v", p)
		}
	}
	ws.ws.Close(websocket.StatusNormalClosure, "bye")
	a.waitHosts(t, m.ID, 0)

	c.connect(t, c.as(m))
	a.waitHosts(t, m.ID, 1)
	c.proxy.Cut() // c dies, as far as a and b can tell
	for gone := false; !gone; {
		select {
		case ch := <-changes:
			gone = ch.Member == m.ID && !ch.Online && ch.Cause == push.CauseNodeGone
		case <-time.After(10 * time.Second):
			t.Fatal("a never saw the member go offline with its node")
		}
	}
	b.waitHosts(t, m.ID, 0)
}

// Attachments go to the shared store: uploaded through one node, downloaded
// through another.
func TestClusterAttachments(t *testing.T) {
	t.Parallel()
	cl := newCluster(t, 3)
	a, c := cl.nodes[0], cl.nodes[2]
	ann, bob := a.register(t, "ann"), a.register(t, "bob")
	makeContacts(t, ann, bob)
	content := attBytes(pngHeader, 300_000)
	up := attUpload(t, a.env, ann, "image/png", content)
	attSend(t, ann, bob, up.ID)

	res, got := attGet(t, c.env, bob.Token, up.ID, nil)
	if res.StatusCode != 200 || !bytes.Equal(got, content) || res.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("download through c: %s %q, %d bytes", res.Status, res.Header.Get("Content-Type"), len(got))
	}
	if keys := cl.s3.Keys(t); len(keys) != 1 {
		t.Errorf("bucket holds %v", keys)
	}
	if files := attStored(t, a.env); len(files) != 0 {
		t.Errorf("node a kept %v on its disk", files)
	}
}

// NATS restarts while members send: every message is stored (the database
// does not need NATS), pushes crossing nodes are lost during the outage, and
// every client following the documented resync procedure (docs/CLUSTER.md)
// converges on the full history. The last messages go out while NATS is
// down, so no later push shows the clients a gap: the resync notice does.
func TestClusterNATSRestartConverges(t *testing.T) {
	t.Parallel()
	cl := newCluster(t, 3)
	a, b, c := cl.nodes[0], cl.nodes[1], cl.nodes[2]
	s1, s2 := a.register(t, "sender-a"), a.register(t, "sender-c")
	r1, r2 := a.register(t, "reader-b"), a.register(t, "reader-c")
	g := newGroup(t, s1, s2, r1, r2)
	direct := makeContacts(t, s2, r1)

	readers := []*resyncClient{
		newResyncClient(t, b, b.as(r1)),
		newResyncClient(t, c, c.as(r2)),
		newResyncClient(t, a, s1), // a sender hears the others
	}
	for _, m := range []*client{r1, r2, s1} {
		for _, n := range cl.nodes {
			n.waitHosts(t, m.ID, 1)
		}
	}

	// s1 sends to the group through a; s2, through c, to the group and to r1.
	senders := []struct {
		c    *client
		req  func(i int) *v1.SendMessageRequest
		sent int
	}{
		{c: s1, req: func(i int) *v1.SendMessageRequest { return groupText(g.GetId(), fmt.Sprintf("s1-%d", i), "from a") }},
		{c: c.as(s2), req: func(i int) *v1.SendMessageRequest {
			if i%2 == 0 {
				return peerText(r1.ID, fmt.Sprintf("s2-%d", i), "direct from c")
			}
			return groupText(g.GetId(), fmt.Sprintf("s2-%d", i), "from c")
		}},
	}
	const perPhase = 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	lastSeq := map[int64]int64{}
	phase := func() {
		for i := range senders {
			s := &senders[i]
			wg.Go(func() {
				for range perPhase {
					s.sent++
					res, err := s.c.Chat.SendMessage(context.Background(), s.req(s.sent))
					if err != nil {
						t.Errorf("SendMessage: %v", err) // nothing stored may depend on NATS
						return
					}
					msg := res.GetMessage()
					mu.Lock()
					lastSeq[msg.GetConversationId()] = max(lastSeq[msg.GetConversationId()], msg.GetSeq())
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	phase() // NATS up
	cl.nats.Stop()
	for _, n := range cl.nodes {
		waitFor(t, "the nodes notice", func() bool { return !n.busStats().Connected })
	}
	phase() // NATS down: only same-node pushes get through
	cl.nats.Start()

	group, pair := lastSeq[g.GetConversationId()], lastSeq[direct]
	if group != 3*perPhase || pair != perPhase {
		t.Fatalf("stored up to seq %d in the group and %d in the pair, want %d and %d", group, pair, 3*perPhase, perPhase)
	}
	// r1, on b, hears of both conversations only from other nodes: nothing
	// after the outage shows it a gap, only the resync notice. r2 and s1 may
	// also see a gap revealed by a push from their own node.
	for i, want := range []map[int64]int64{
		{g.GetConversationId(): group, direct: pair}, // r1
		{g.GetConversationId(): group},               // r2
		{g.GetConversationId(): group},               // s1
	} {
		readers[i].waitConverged(t, want, i == 0)
	}
	for _, n := range cl.nodes {
		if s := n.busStats(); s.Reconnects == 0 {
			t.Errorf("%s: %+v", s.NodeID, s)
		}
	}
	if s := a.busStats(); s.EventsDropped == 0 {
		t.Errorf("node a dropped no events while NATS was down: %+v", s)
	}
}

// resyncClient follows the resync procedure of docs/CLUSTER.md: per
// conversation it holds every message up to last; a pushed message with seq
// last+1 is taken, one at or below last is a duplicate, one past last+1 shows
// a gap that ListMessages after last fills; a resync notice makes it check
// every conversation (ListConversations) and fill what it lacks.
type resyncClient struct {
	c       *client
	mu      sync.Mutex
	last    map[int64]int64
	held    map[int64][]int64 // seqs held, in the order taken
	changed chan struct{}     // capacity 1
	errs    chan error
	resyncs int
}

func newResyncClient(t *testing.T, n *clusterNode, c *client) *resyncClient {
	t.Helper()
	ev := n.connect(t, c)
	r := &resyncClient{c: c, last: map[int64]int64{}, held: map[int64][]int64{},
		changed: make(chan struct{}, 1), errs: make(chan error, 16)}
	go r.run(ev.ws)
	return r
}

func (r *resyncClient) run(ws *websocket.Conn) {
	for {
		_, data, err := ws.Read(context.Background())
		if err != nil {
			return // the test ended (or failed elsewhere)
		}
		ev := &v1.Event{}
		if err := proto.Unmarshal(data, ev); err != nil {
			r.errs <- err
			return
		}
		switch {
		case ev.GetMessage() != nil:
			r.take(ev.GetMessage())
		case ev.GetResync() != nil:
			r.mu.Lock()
			r.resyncs++
			r.mu.Unlock()
			r.resyncAll()
		}
		select {
		case r.changed <- struct{}{}:
		default:
		}
	}
}

func (r *resyncClient) take(m *v1.Message) {
	r.mu.Lock()
	last := r.last[m.GetConversationId()]
	switch {
	case m.GetSeq() <= last: // a duplicate, or filled in already
		r.mu.Unlock()
	case m.GetSeq() == last+1:
		r.last[m.GetConversationId()] = m.GetSeq()
		r.held[m.GetConversationId()] = append(r.held[m.GetConversationId()], m.GetSeq())
		r.mu.Unlock()
	default:
		r.mu.Unlock()
		r.fill(m.GetConversationId())
		r.take(m)
	}
}

// fill reads a conversation's history after the last seq held.
func (r *resyncClient) fill(conv int64) {
	for {
		r.mu.Lock()
		last := r.last[conv]
		r.mu.Unlock()
		res, err := r.c.Chat.ListMessages(context.Background(), &v1.ListMessagesRequest{
			ConversationId: conv, Position: &v1.ListMessagesRequest_AfterSeq{AfterSeq: last}, Limit: 50,
		})
		if err != nil {
			r.errs <- fmt.Errorf("ListMessages: %w", err)
			return
		}
		for _, m := range res.GetMessages() {
			r.take(m)
		}
		if !res.GetHasMore() {
			return
		}
	}
}

func (r *resyncClient) resyncAll() {
	token := ""
	for {
		res, err := r.c.Chat.ListConversations(context.Background(), &v1.ListConversationsRequest{PageSize: 100, PageToken: token})
		if err != nil {
			r.errs <- fmt.Errorf("ListConversations: %w", err)
			return
		}
		for _, conv := range res.GetConversations() {
			r.mu.Lock()
			behind := conv.GetLastSeq() > r.last[conv.GetId()]
			r.mu.Unlock()
			if behind {
				r.fill(conv.GetId())
			}
		}
		if token = res.GetNextPageToken(); token == "" {
			return
		}
	}
}

// waitConverged waits until the client holds every seq of every conversation
// in want, each once and in order; notified: it must have had a resync notice
// on the way.
func (r *resyncClient) waitConverged(t *testing.T, want map[int64]int64, notified bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		done := true
		for conv, last := range want {
			if r.last[conv] < last {
				done = false
			}
		}
		held := fmt.Sprint(r.held)
		resyncs := r.resyncs
		ok := true
		for conv, last := range want {
			if r.last[conv] >= last && !slices.Equal(r.held[conv], seqRange(1, r.last[conv])) {
				ok = false
			}
		}
		r.mu.Unlock()
		if !ok {
			t.Fatalf("member %d holds %s: not each seq once and in order", r.c.ID, held)
		}
		if done {
			if notified && resyncs == 0 {
				t.Errorf("member %d converged without a resync notice", r.c.ID)
			}
			return
		}
		select {
		case <-r.changed:
		case err := <-r.errs:
			t.Fatalf("member %d: %v", r.c.ID, err)
		case <-deadline:
			t.Fatalf("member %d did not converge: holds %s, want up to %v", r.c.ID, held, want)
		}
	}
}

// wantMessages checks that each socket's next events are exactly the messages
// want, in order.
func wantMessages(t *testing.T, sockets map[string]*events, want ...*v1.Message) {
	t.Helper()
	for name, ev := range sockets {
		for _, w := range want {
			if got := ev.next(); !sameMessage(got.GetMessage(), w) {
				t.Errorf("socket %s got %v, want %v", name, got, w)
			}
		}
	}
}
