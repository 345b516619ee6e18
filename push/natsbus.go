package push

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSConfig configures a NATSBus. Zero fields take the defaults beside them.
type NATSConfig struct {
	// URL is the NATS server: nats://host:4222, several comma-separated for
	// a NATS cluster, credentials as nats://user:password@host:4222.
	URL string
	// Name names this node in logs, to NATS and to the other nodes
	// (default: the host name).
	Name string
	// Prefix begins every subject (default "karlmalone"). The nodes of one
	// cluster share it; two clusters on one NATS must not.
	Prefix string
	// Heartbeat is how often a node tells the others that it is alive and
	// how far its announcements have got (default 3s).
	Heartbeat time.Duration
	// Expiry: a node not heard from for this long is taken for dead, and
	// its members for offline (default 10s). They go offline on every node
	// within Expiry+Heartbeat of its death.
	Expiry time.Duration
	// AnnounceDelay gathers this node's directory changes for this long
	// and sends them as one message (default 5ms). A member's first socket
	// or stream on a node waits for its announcement (this delay plus a
	// round trip to NATS) before the handshake completes.
	AnnounceDelay time.Duration
	// ReconnectWait is the pause between attempts to reach NATS (default 1s).
	ReconnectWait time.Duration
	// OnConnect, if set, runs (on a goroutine of the NATS client) each time
	// the connection is established: the first time, and after every loss.
	// Revocations sent while it was down were lost to this node: whatever
	// it caches about sessions must be checked again.
	OnConnect func()
}

func (c NATSConfig) withDefaults() NATSConfig {
	if c.Name == "" {
		c.Name, _ = os.Hostname()
	}
	if c.Prefix == "" {
		c.Prefix = "karlmalone"
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 3 * time.Second
	}
	if c.Expiry <= 0 {
		c.Expiry = 10 * time.Second
	}
	if c.AnnounceDelay <= 0 {
		c.AnnounceDelay = 5 * time.Millisecond
	}
	if c.ReconnectWait <= 0 {
		c.ReconnectWait = time.Second
	}
	return c
}

// NATSBus is the Bus over NATS core pub/sub (at most once). Each node has a
// random id, new at every start, and these subjects (P is Config.Prefix):
//
//	P.ev.<node>    events for members that node hosts: one message per
//	               event and node, naming its members (kindEvent)
//	P.revoke       session revocations, heard by every node
//	P.resync       "tell all your clients to resync", heard by every node
//	               (after an outage in which a node dropped events for too
//	               many members to name them)
//	P.dir.<node>   that node's directory stream: changes (seq-numbered),
//	               heartbeats and its goodbye, heard by every node
//	P.sync.<node>  requests for that node's full state, and P.sync.all for
//	               everyone's (a starting node); the answer goes to
//	P.snap.<node>  the requester, in parts if large
//
// docs/CLUSTER.md explains the scheme and its costs.
type NATSBus struct {
	cfg NATSConfig
	log *slog.Logger
	id  string

	nc   *nats.Conn
	subs []*nats.Subscription
	node Node
	dir  *Directory

	subjEvents, subjRevoke, subjResync, subjDir, subjSnap, subjSync, subjSyncAll string
	dirPrefix                                                                    string // "P.dir."

	dirMsgs   chan *nats.Msg // the directory's messages, in the order they came
	connected chan struct{}  // capacity 1: (re)connected, say hello
	kick      <-chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closing   atomic.Bool

	pubMu sync.Mutex // orders this node's directory messages
	seq   uint64     // of the last change message sent, under pubMu

	peers map[string]*peerState // dirLoop's own

	sinceMu sync.Mutex
	since   time.Time // last change of the connection state

	// What was lost while disconnected, for the resync notices sent once
	// the cluster has settled after reconnection (resyncAt, dirLoop's own).
	lostMu     sync.Mutex
	downSince  time.Time          // zero while nothing is owed
	dropped    map[int64]struct{} // remote members whose events were dropped
	droppedAll bool               // too many to name
	resyncAt   time.Time

	// connectedAt (Unix ns) is when the connection last came up: no node
	// can have been heard from before, so none expires sooner than Expiry
	// after it, whatever dirLoop has seen yet.
	connectedAt atomic.Int64

	stats struct {
		disconnects, reconnects                    atomic.Uint64
		eventsSent, eventsReceived, eventsDropped  atomic.Uint64
		bad, revokesSent, revokesReceived, resyncs atomic.Uint64
	}
}

// peerState is what this node knows of another node's directory stream.
type peerState struct {
	slot   int
	name   string
	seq    uint64 // last change applied
	synced bool   // its state is known (a snapshot, then every change since)
	heard  time.Time
	asked  time.Time // last request for its state

	snap     []memberSince // parts received so far
	snapSeq  uint64
	snapNext int // the part expected next; -1: none
}

var _ Bus = (*NATSBus)(nil)

// errNotConnected is what the bus returns while NATS is out of reach.
var errNotConnected = errors.New("push: not connected to NATS")

// NewNATSBus returns a bus that connects when the hub starts it.
func NewNATSBus(cfg NATSConfig, log *slog.Logger) *NATSBus {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	var id [8]byte
	rand.Read(id[:]) // never fails (crypto/rand)
	b := &NATSBus{
		cfg:       cfg,
		id:        hex.EncodeToString(id[:]),
		dirMsgs:   make(chan *nats.Msg, 8192),
		connected: make(chan struct{}, 1),
		stop:      make(chan struct{}),
		peers:     make(map[string]*peerState),
		since:     time.Now(),
	}
	b.log = log.With("node", cfg.Name, "node_id", b.id)
	p := cfg.Prefix
	b.subjEvents = p + ".ev." + b.id
	b.subjRevoke = p + ".revoke"
	b.subjResync = p + ".resync"
	b.dirPrefix = p + ".dir."
	b.subjDir = b.dirPrefix + b.id
	b.subjSnap = p + ".snap." + b.id
	b.subjSync = p + ".sync." + b.id
	b.subjSyncAll = p + ".sync.all"
	return b
}

// NodeID is this node's id on the bus.
func (b *NATSBus) NodeID() string { return b.id }

// Start connects to NATS (or keeps trying in the background) and joins the
// cluster.
func (b *NATSBus) Start(n Node) error {
	b.node, b.dir = n, n.Directory()
	nc, err := nats.Connect(b.cfg.URL,
		nats.Name("karlmalone "+b.cfg.Name+" "+b.id),
		nats.NoEcho(), // this node never needs its own messages
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(b.cfg.ReconnectWait),
		// Nothing is kept for later while disconnected: an event sent after
		// the recipient resynced would only confuse it, and the directory
		// is rebuilt on reconnection anyway.
		nats.ReconnectBufSize(-1),
		// Notice a silent network loss within about 15 s, not the default 4 min.
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(3),
		nats.ConnectHandler(func(nc *nats.Conn) { b.onConnect(nc, false) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { b.onConnect(nc, true) }),
		nats.DisconnectErrHandler(b.onDisconnect),
		nats.ErrorHandler(b.onAsyncError),
	)
	if err != nil {
		return fmt.Errorf("push: connect to NATS: %w", err)
	}
	b.nc = nc
	for _, s := range []struct {
		subj string
		cb   nats.MsgHandler
	}{{b.subjEvents, b.onEvent}, {b.subjRevoke, b.onRevoke}, {b.subjResync, b.onResync}} {
		sub, err := nc.Subscribe(s.subj, s.cb)
		if err != nil {
			nc.Close()
			return fmt.Errorf("push: subscribe to %s: %w", s.subj, err)
		}
		b.subs = append(b.subs, sub)
	}
	// One channel for every directory subject: the client library fills it
	// in the order messages came off the wire, which is the order each
	// node sent them in, so a node's snapshot and its changes apply in seq order.
	for _, subj := range []string{b.dirPrefix + "*", b.subjSnap, b.subjSync, b.subjSyncAll} {
		sub, err := nc.ChanSubscribe(subj, b.dirMsgs)
		if err != nil {
			nc.Close()
			return fmt.Errorf("push: subscribe to %s: %w", subj, err)
		}
		b.subs = append(b.subs, sub)
	}
	// Only now: a member's first receiver waits for its announcement, which
	// needs announceLoop. onConnect says hello once dirLoop runs, after the
	// subscriptions above: the answers must find them.
	b.kick = b.dir.startAnnouncing()
	b.wg.Go(b.dirLoop)
	b.wg.Go(b.announceLoop)
	if !nc.IsConnected() {
		b.markDown()
		b.log.Warn("push: NATS unreachable; serving this node's members only and retrying", "url", redactURLs(b.cfg.URL))
	}
	return nil
}

// redactURLs hides the credentials of comma-separated URLs, for logs.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

func (b *NATSBus) signalConnected() {
	select {
	case b.connected <- struct{}{}:
	default:
	}
}

func (b *NATSBus) onConnect(nc *nats.Conn, again bool) {
	b.connectedAt.Store(time.Now().UnixNano())
	b.setSince()
	if again {
		b.stats.reconnects.Add(1)
	}
	b.log.Info("push: connected to NATS", "url", nc.ConnectedUrlRedacted(), "reconnect", again)
	b.signalConnected()
	b.node.BusConnected(true)
	if b.cfg.OnConnect != nil {
		b.cfg.OnConnect()
	}
}

func (b *NATSBus) onDisconnect(nc *nats.Conn, err error) {
	if b.closing.Load() {
		return
	}
	b.setSince()
	b.markDown()
	b.stats.disconnects.Add(1)
	b.node.BusConnected(false)
	b.log.Warn("push: lost NATS; serving this node's members only until it is back", "err", err)
}

func (b *NATSBus) onAsyncError(nc *nats.Conn, sub *nats.Subscription, err error) {
	subj := ""
	if sub != nil {
		subj = sub.Subject
	}
	b.log.Warn("push: NATS", "subject", subj, "err", err)
}

func (b *NATSBus) setSince() {
	b.sinceMu.Lock()
	b.since = time.Now()
	b.sinceMu.Unlock()
}

// Publish implements Bus.
func (b *NATSBus) Publish(memberIDs []int64, encoded func() ([]byte, error)) error {
	batches := b.dir.route(memberIDs)
	if len(batches) == 0 {
		return nil
	}
	if !b.nc.IsConnected() {
		b.stats.eventsDropped.Add(uint64(len(batches)))
		b.lost(batches)
		return errNotConnected
	}
	ev, err := encoded()
	if err != nil {
		b.stats.eventsDropped.Add(uint64(len(batches)))
		return err // logged by the encoder
	}
	var first error
	for _, nb := range batches {
		msg := appendEvent(make([]byte, 0, eventSize(len(nb.ids), len(ev))), nb.ids, ev)
		if err := b.nc.Publish(nb.subject, msg); err != nil {
			b.stats.eventsDropped.Add(1)
			if first == nil {
				first = err
			}
			continue
		}
		b.stats.eventsSent.Add(1)
	}
	if first != nil && b.nc.IsConnected() {
		b.log.Warn("push: publish event", "err", first)
	}
	return first
}

func (b *NATSBus) onEvent(m *nats.Msg) {
	ids, ev, err := parseEvent(m.Data, nil)
	if err != nil {
		b.stats.bad.Add(1)
		return
	}
	b.stats.eventsReceived.Add(1)
	b.node.Deliver(ids, ev)
}

// CloseSession implements Bus.
func (b *NATSBus) CloseSession(sessionID int64) error {
	if !b.nc.IsConnected() {
		b.log.Warn("push: NATS down: other nodes keep the revoked session's sockets until it is back", "session", sessionID)
		return errNotConnected
	}
	if err := b.nc.Publish(b.subjRevoke, appendRevoke(nil, sessionID)); err != nil {
		b.log.Warn("push: publish revocation", "session", sessionID, "err", err)
		return fmt.Errorf("push: publish revocation: %w", err)
	}
	b.stats.revokesSent.Add(1)
	return nil
}

func (b *NATSBus) onRevoke(m *nats.Msg) {
	id, err := parseRevoke(m.Data)
	if err != nil {
		b.stats.bad.Add(1)
		return
	}
	b.node.CloseLocalSession(id)
	// Counted once applied: whoever sees the count may rely on it.
	b.stats.revokesReceived.Add(1)
}

// maxDropped is how many members' lost events a node remembers by name; past
// that, every node tells every client to resync.
const maxDropped = 65536

// markDown notes when events started to go missing.
func (b *NATSBus) markDown() {
	b.lostMu.Lock()
	defer b.lostMu.Unlock()
	if b.downSince.IsZero() {
		b.downSince = time.Now()
	}
}

// lost remembers the members whose events were dropped.
func (b *NATSBus) lost(batches []nodeBatch) {
	b.lostMu.Lock()
	defer b.lostMu.Unlock()
	if b.droppedAll {
		return
	}
	if b.dropped == nil {
		b.dropped = make(map[int64]struct{})
	}
	for _, nb := range batches {
		for _, id := range nb.ids {
			b.dropped[id] = struct{}{}
		}
	}
	if len(b.dropped) > maxDropped {
		b.dropped, b.droppedAll = nil, true
	}
}

// sendResync tells the clients that may have missed events during the
// outage to resync: this node's (they missed what other nodes sent), and the
// members on other nodes whose events this node dropped.
func (b *NATSBus) sendResync() {
	b.lostMu.Lock()
	since, dropped, all := b.downSince, b.dropped, b.droppedAll
	b.downSince, b.dropped, b.droppedAll = time.Time{}, nil, false
	b.lostMu.Unlock()
	if since.IsZero() {
		return
	}
	var remote []int64
	if all {
		if err := b.nc.Publish(b.subjResync, appendResync(nil, since.UnixMilli())); err != nil {
			b.log.Warn("push: publish resync", "err", err)
		}
	} else {
		remote = make([]int64, 0, len(dropped))
		for id := range dropped {
			remote = append(remote, id)
		}
	}
	b.node.Resync(since, remote)
}

func (b *NATSBus) onResync(m *nats.Msg) {
	since, err := parseResync(m.Data)
	if err != nil {
		b.stats.bad.Add(1)
		return
	}
	b.node.Resync(time.UnixMilli(since), nil)
}

// Stats implements Bus.
func (b *NATSBus) Stats() BusStats {
	b.sinceMu.Lock()
	since := b.since
	b.sinceMu.Unlock()
	var slow uint64
	for _, s := range b.subs {
		if n, err := s.Dropped(); err == nil {
			slow += uint64(n)
		}
	}
	return BusStats{
		Connected:           b.nc != nil && b.nc.IsConnected(),
		Since:               since,
		NodeID:              b.id,
		Peers:               b.dir.peerCount(),
		Disconnects:         b.stats.disconnects.Load(),
		Reconnects:          b.stats.reconnects.Load(),
		EventsSent:          b.stats.eventsSent.Load(),
		EventsReceived:      b.stats.eventsReceived.Load(),
		EventsDropped:       b.stats.eventsDropped.Load(),
		BadMessages:         b.stats.bad.Load(),
		RevocationsSent:     b.stats.revokesSent.Load(),
		RevocationsReceived: b.stats.revokesReceived.Load(),
		DirectoryResyncs:    b.stats.resyncs.Load(),
		SlowConsumer:        slow,
	}
}

// Close implements Bus: it says goodbye, so the other nodes drop this node's
// members at once instead of after Expiry.
func (b *NATSBus) Close() error {
	b.closeOnce.Do(func() {
		b.closing.Store(true)
		close(b.stop)
		b.wg.Wait()
		b.dir.stopAnnouncing()
		if b.nc.IsConnected() {
			b.pubMu.Lock()
			b.nc.Publish(b.subjDir, []byte{kindBye})
			b.pubMu.Unlock()
			b.nc.FlushTimeout(time.Second)
		}
		b.nc.Close()
	})
	return nil
}

// announceLoop sends this node's directory changes: gathered for
// AnnounceDelay, one seq-numbered message (or several, if huge), then a
// round trip to NATS so that whoever waits for the announcement knows NATS
// has it.
func (b *NATSBus) announceLoop() {
	for {
		select {
		case <-b.kick:
		case <-b.stop:
			return
		}
		t := time.NewTimer(b.cfg.AnnounceDelay)
		select {
		case <-t.C:
		case <-b.stop:
			t.Stop()
			return
		}
		on, off, sent := b.dir.takePending()
		if sent == nil {
			return // announcing stopped
		}
		if len(on)+len(off) > 0 {
			b.publishChanges(on, off)
			if b.nc.IsConnected() {
				if err := b.nc.FlushTimeout(time.Second); err != nil {
					b.log.Debug("push: flush directory changes", "err", err)
				}
			}
		}
		close(sent)
	}
}

// maxEntries is how many members fit in one directory message.
func (b *NATSBus) maxEntries() int {
	n := int((b.nc.MaxPayload() - 256) / entrySize)
	if n < 1024 {
		n = 1024 // MaxPayload is 0 before the first connection
	}
	return n
}

func (b *NATSBus) publishChanges(on []memberSince, off []int64) {
	now := time.Now().UnixMilli()
	limit := b.maxEntries()
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	for len(on)+len(off) > 0 {
		nOn := min(len(on), limit)
		nOff := min(len(off), limit-nOn)
		b.seq++ // a message lost (NATS down) is a gap the others notice
		msg := appendDelta(nil, b.seq, now, on[:nOn], off[:nOff])
		on, off = on[nOn:], off[nOff:]
		if err := b.nc.Publish(b.subjDir, msg); err != nil {
			b.log.Debug("push: publish directory changes", "err", err)
		}
	}
}

// dirLoop keeps the directory: it applies the other nodes' messages in the
// order they came, answers requests for this node's state, sends heartbeats
// and expires nodes that went silent.
func (b *NATSBus) dirLoop() {
	t := time.NewTicker(b.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-b.connected:
			b.hello()
		case m := <-b.dirMsgs:
			b.handleDir(m)
		case <-t.C:
			b.tick()
		}
	}
}

// hello follows every (re)connection: ask every node for its state, and say
// where this node's stream stands (the others notice what they missed).
// Nodes that were silent while this one was away get a fresh Expiry.
func (b *NATSBus) hello() {
	now := time.Now()
	for _, p := range b.peers {
		p.heard, p.asked, p.synced = now, now, false
	}
	// Resync notices wait until the others have had time to learn this
	// node's state again (they ask within a heartbeat of hearing it): a
	// client that resyncs after the notice then gets every later event.
	b.resyncAt = now.Add(2 * b.cfg.Heartbeat)
	b.stats.resyncs.Add(1)
	if err := b.nc.PublishRequest(b.subjSyncAll, b.subjSnap, []byte{kindSync}); err != nil {
		b.log.Debug("push: request directory", "err", err)
	}
	b.heartbeat()
}

func (b *NATSBus) heartbeat() {
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	if err := b.nc.Publish(b.subjDir, appendHeartbeat(nil, b.seq, b.dir.localCount(), b.cfg.Name)); err != nil {
		b.log.Debug("push: publish heartbeat", "err", err)
	}
}

func (b *NATSBus) tick() {
	if !b.nc.IsConnected() {
		// Silence from the others says nothing while this node cannot hear
		// them: keep their members (stale) rather than declare everyone
		// offline; hello refreshes them on reconnection.
		return
	}
	b.heartbeat()
	now := time.Now()
	if !b.resyncAt.IsZero() && now.After(b.resyncAt) {
		b.resyncAt = time.Time{}
		b.sendResync()
	}
	up := time.Unix(0, b.connectedAt.Load())
	for id, p := range b.peers {
		if now.Sub(p.heard) > b.cfg.Expiry && now.Sub(up) > b.cfg.Expiry {
			b.dropPeer(id, p, "silent for longer than the expiry")
			continue
		}
		if !p.synced {
			b.ask(id, p, false)
		}
	}
}

func (b *NATSBus) dropPeer(id string, p *peerState, why string) {
	b.log.Info("push: node gone", "peer", id, "name", p.name, "why", why, "members", b.dir.peerMembers(p.slot))
	b.dir.removePeer(p.slot, time.Now().UnixMilli())
	delete(b.peers, id)
}

// peer returns the state of node id, adding it to the directory when new (nil
// when the directory is full). A new node is asked for its state unless what
// came from it is its state.
func (b *NATSBus) peer(id, name string, isState bool) *peerState {
	if p := b.peers[id]; p != nil {
		if name != "" && name != p.name {
			p.name = name
			b.dir.renamePeer(p.slot, name)
		}
		return p
	}
	slot, ok := b.dir.addPeer(id, name, b.cfg.Prefix+".ev."+id)
	if !ok {
		b.log.Error("push: too many nodes; ignoring one", "peer", id, "max", maxPeers)
		return nil
	}
	b.log.Info("push: node joined", "peer", id, "name", name)
	p := &peerState{slot: slot, name: name, snapNext: -1}
	b.peers[id] = p
	if !isState {
		b.ask(id, p, true)
	}
	return p
}

// ask requests node id's state, at most once per Heartbeat unless forced.
func (b *NATSBus) ask(id string, p *peerState, force bool) {
	now := time.Now()
	if !force && now.Sub(p.asked) < b.cfg.Heartbeat {
		return
	}
	p.asked = now
	p.synced = false
	b.stats.resyncs.Add(1)
	if err := b.nc.PublishRequest(b.cfg.Prefix+".sync."+id, b.subjSnap, []byte{kindSync}); err != nil {
		b.log.Debug("push: request directory", "peer", id, "err", err)
	}
}

func (b *NATSBus) handleDir(m *nats.Msg) {
	if len(m.Data) == 0 {
		// NATS's "no responders" notice (a request for state that no
		// node was there to answer) is empty; so is nothing of ours.
		return
	}
	now := time.Now()
	switch {
	case strings.HasPrefix(m.Subject, b.dirPrefix):
		id := m.Subject[len(b.dirPrefix):]
		if id == b.id {
			return
		}
		b.handleStream(id, m.Data, now)
	case m.Subject == b.subjSnap:
		b.handleSnapshot(m.Data, now)
	case m.Subject == b.subjSync || m.Subject == b.subjSyncAll:
		if m.Reply != "" {
			b.sendState(m.Reply)
		}
	}
}

// handleStream applies a message of node id's directory stream.
func (b *NATSBus) handleStream(id string, data []byte, now time.Time) {
	switch data[0] {
	case kindDelta:
		d, err := parseDelta(data, now.UnixMilli())
		if err != nil {
			b.stats.bad.Add(1)
			return
		}
		p := b.peer(id, "", false)
		if p == nil {
			return
		}
		p.heard = now
		switch {
		case !p.synced:
			// Its state is on the way (or will be asked for again);
			// the snapshot covers this change.
		case d.seq <= p.seq:
			// Already covered by a snapshot.
		case d.seq == p.seq+1:
			b.dir.peerChanged(p.slot, d.on, d.off, CauseRemote)
			p.seq = d.seq
		default:
			b.log.Debug("push: missed directory changes", "peer", id, "have", p.seq, "got", d.seq)
			b.ask(id, p, true)
		}
	case kindHeartbeat:
		h, err := parseHeartbeat(data)
		if err != nil {
			b.stats.bad.Add(1)
			return
		}
		p := b.peer(id, h.name, false)
		if p == nil {
			return
		}
		p.heard = now
		if p.synced && h.seq != p.seq {
			b.log.Debug("push: missed directory changes", "peer", id, "have", p.seq, "heartbeat", h.seq)
			b.ask(id, p, true)
		}
	case kindBye:
		if p := b.peers[id]; p != nil {
			b.dropPeer(id, p, "left")
		}
	default:
		b.stats.bad.Add(1)
	}
}

// handleSnapshot applies a part of another node's full state.
func (b *NATSBus) handleSnapshot(data []byte, now time.Time) {
	s, err := parseSnapshot(data, now.UnixMilli())
	if err != nil || s.node == b.id {
		b.stats.bad.Add(1)
		return
	}
	p := b.peer(s.node, s.name, true)
	if p == nil {
		return
	}
	p.heard = now
	if s.part == 0 {
		p.snap, p.snapSeq, p.snapNext = p.snap[:0], s.seq, 0
	}
	if s.part != p.snapNext || s.seq != p.snapSeq {
		// A part went missing: wait for the whole state again.
		p.snap, p.snapNext = nil, -1
		b.ask(s.node, p, true)
		return
	}
	p.snap = append(p.snap, s.entries...)
	if p.snapNext++; p.snapNext < s.parts {
		return
	}
	if !p.synced || s.seq >= p.seq {
		b.dir.replacePeer(p.slot, p.snap)
		p.seq, p.synced = s.seq, true
	}
	p.snap, p.snapNext = nil, -1
}

// sendState answers a request for this node's full state. Under pubMu, the
// state and seq agree: the state holds every change up to seq (and perhaps
// later ones, which the next change message repeats harmlessly: changes are
// states, not increments).
func (b *NATSBus) sendState(reply string) {
	now := time.Now().UnixMilli()
	limit := b.maxEntries()
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	state := b.dir.localState()
	parts := max(1, (len(state)+limit-1)/limit)
	for i := range parts {
		part := state[min(i*limit, len(state)):min((i+1)*limit, len(state))]
		if err := b.nc.Publish(reply, appendSnapshot(nil, b.id, b.cfg.Name, b.seq, i, parts, now, part)); err != nil {
			b.log.Debug("push: send directory", "err", err)
			return
		}
	}
}
