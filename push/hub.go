// Package push delivers events to every online device of a member: over
// WebSocket (GET /v1/push, see NewHandler) and to server-streaming RPC
// subscribers (see Hub.Subscribe).
//
// The Hub is sharded by member id. Publish encodes an event at most once per
// wire encoding, shared by every recipient, and never blocks: each receiver has
// a small bounded queue, and a receiver that cannot keep up is disconnected
// (close code 1008, "too slow: resync") so its client reconnects and resyncs
// over RPC. Push is the fast path; history is the truth.
//
// With a Bus (Config.Bus, NATSBus) the hub is one node of a cluster: events
// for members on other nodes travel over the bus, encoded once, and the hub's
// Directory knows who is online where (presence).
//
// The package knows nothing about the project's generated types: an event is
// any proto.Message (Config.NewEvent makes one to decode events that other
// nodes sent). docs/ARCHITECTURE.md follows an event from the RPC that makes
// it to the socket, and describes the bus seam between nodes.
package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"
)

// Errors that end a Subscription. Callers map them to RPC codes (for example
// ErrSlowConsumer → ResourceExhausted or Unavailable, ErrSessionRevoked and
// ErrSessionExpired → Unauthenticated, ErrShutdown → Unavailable).
var (
	ErrSlowConsumer   = errors.New("push: too slow: resync")
	ErrSessionRevoked = errors.New("push: session revoked")
	ErrSessionExpired = errors.New("push: session expired")
	ErrShutdown       = errors.New("push: server shutting down")
	ErrClosed         = errors.New("push: closed")
	// ErrTooManyReceivers refuses a socket or subscription beyond
	// Config.MaxPerMember: the handler answers 429, Subscribe
	// resource_exhausted.
	ErrTooManyReceivers = errors.New("push: too many open sockets and subscriptions for this member")
)

// StatusSessionRevoked is the WebSocket close code sent by CloseSession, and
// when a session expires (with the reason "session expired"). 4000–4999 is
// the private-use range of RFC 6455.
const StatusSessionRevoked websocket.StatusCode = 4001

// closeReason is how and why a receiver is closed: the WebSocket close code
// and reason (code 0: drop the socket without a close handshake, for peers
// that are gone anyway) and the error a Subscription reports.
type closeReason struct {
	code websocket.StatusCode
	text string
	err  error
}

var (
	reasonSlow           = closeReason{websocket.StatusPolicyViolation, "too slow: resync", ErrSlowConsumer}
	reasonRevoked        = closeReason{StatusSessionRevoked, "session revoked", ErrSessionRevoked}
	reasonExpired        = closeReason{StatusSessionRevoked, "session expired", ErrSessionExpired}
	reasonShutdown       = closeReason{websocket.StatusGoingAway, "server shutting down", ErrShutdown}
	reasonUnexpectedData = closeReason{websocket.StatusPolicyViolation, "clients send no messages", ErrClosed}
	reasonGone           = closeReason{0, "", ErrClosed}
)

// Config tunes the hub. Zero fields take DefaultConfig's values, the one
// place the defaults are written.
type Config struct {
	Shards       int           // always rounded up to a power of two
	QueueSize    int           // per-receiver outbound queue, in frames
	WriteTimeout time.Duration // per write (a socket whose write takes longer is dropped)
	PingInterval time.Duration // how often sockets are pinged
	PingTimeout  time.Duration // a dead peer is dropped within PingInterval+PingTimeout
	ReadLimit    int64         // client frame limit (clients send nothing meaningful)
	// MaxPerMember bounds a member's open sockets and subscriptions on this
	// node together: each costs memory and a queue, and a member has a few
	// devices, not hundreds.
	MaxPerMember   int
	OriginPatterns []string // passed to websocket.AcceptOptions
	// Batched subprotocols: most events and bytes per WebSocket message.
	// One event larger than BatchBytes goes alone.
	BatchEvents, BatchBytes int
	// CoalesceWindow: a busy batched socket's writer waits this long after a
	// write so the next message carries more (0: off). A socket that has not
	// written lately is never delayed.
	CoalesceWindow time.Duration
	// Bus joins this node to the others of a cluster; the hub owns it from
	// NewHub on and closes it in Shutdown. Nil: this node alone.
	Bus Bus
	// NewEvent returns an empty event message, to decode events that other
	// nodes sent (binary protobuf) for JSON sockets and Subscriptions. Binary
	// sockets get the bytes as they came. Required with a Bus.
	NewEvent func() proto.Message
	// ResyncEvent returns the event that tells a client that events for it
	// may have been lost since a time, sent after the bus was down (see
	// docs/CLUSTER.md). Nil: no such notice.
	ResyncEvent func(since time.Time) proto.Message
}

// DefaultConfig returns the hub's defaults; the command's flags and the tests
// take theirs from here. Bus is left nil: the node runs alone.
func DefaultConfig() Config {
	return Config{
		Shards:       4 * runtime.GOMAXPROCS(0),
		QueueSize:    256,
		WriteTimeout: 5 * time.Second,
		PingInterval: 25 * time.Second,
		PingTimeout:  5 * time.Second,
		ReadLimit:    4 << 10,
		MaxPerMember: 16,
		BatchEvents:  64,
		BatchBytes:   16 << 10,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Shards <= 0 {
		c.Shards = d.Shards
	}
	c.Shards = 1 << bits.Len(uint(c.Shards-1)) // next power of two (1 stays 1)
	if c.QueueSize <= 0 {
		c.QueueSize = d.QueueSize
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.PingInterval <= 0 {
		c.PingInterval = d.PingInterval
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = d.PingTimeout
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = d.ReadLimit
	}
	if c.MaxPerMember <= 0 {
		c.MaxPerMember = d.MaxPerMember
	}
	if c.BatchEvents <= 0 {
		c.BatchEvents = d.BatchEvents
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = d.BatchBytes
	}
	return c
}

// Principal is an authenticated caller: a member on one of its sessions
// (devices). Its receivers are closed when the session expires, at ExpiresAt
// (zero: never).
type Principal struct {
	MemberID, SessionID int64
	ExpiresAt           time.Time
}

// Authenticator resolves a bearer token to the caller. It is the server's auth, injected.
type Authenticator func(ctx context.Context, token string) (Principal, error)

// Stats is a snapshot of the hub's counters.
type Stats struct {
	Connections             int64  // open WebSockets
	Subscriptions           int64  // open RPC subscriptions
	Published               uint64 // events accepted by Publish
	Delivered               uint64 // events written to a socket or handed to a subscriber
	Messages                uint64 // WebSocket messages written: one per event, or per batch
	Dropped                 uint64 // frames never delivered (overflow, closed receiver, write or encode failure)
	SlowConsumerDisconnects uint64 // receivers closed because their queue was full
	DeadPeers               uint64 // sockets dropped because a ping went unanswered or a write took longer than WriteTimeout
}

type counters struct {
	conns, subs                               atomic.Int64
	published, delivered, dropped, slow, dead atomic.Uint64
	messages                                  atomic.Uint64
}

// Hub fans events out to the receivers registered on this node.
type Hub struct {
	cfg    Config
	log    *slog.Logger
	shards []*shard
	shift  uint // member hash >> shift selects the shard

	ctx    context.Context // lives until Shutdown; parent of every socket's read loop and ping (a write ends when its socket closes)
	cancel context.CancelFunc

	dir     *Directory
	bus     Bus           // nil: this node alone
	closing atomic.Bool   // set once by Shutdown; read by register under the shard lock
	done    chan struct{} // closed when Shutdown has finished
	pingers sync.WaitGroup
	pingSem chan struct{} // bounds concurrent pings across shards

	stats counters

	sessionWatch atomic.Pointer[SessionWatch] // see WatchSessions

	// Test hooks, set by tests before the first receiver registers.
	testHookWrite         func(*conn)     // in the writer goroutine, before each socket write
	testHookLinger        func(*conn)     // replaces linger's sleep
	testHookRegistered    func(*conn)     // after a socket is registered (the client may not know yet)
	testHookAuthenticated func(Principal) // after a socket's token is accepted, before it is registered
}

// shard owns the receivers of the members hashed to it.
//
// CloseSession needs every receiver of a session. Rather than scanning every
// receiver (O(connections), at every logout), each shard keeps a small
// session index beside the member map. A session belongs to one member, so its
// receivers live in that member's shard and registering takes one lock;
// CloseSession looks the session up in each shard (O(shards) map lookups).
type shard struct {
	mu       sync.RWMutex
	members  map[int64]map[*conn]struct{}
	sessions map[int64][]*conn
	sockets  int // WebSockets in this shard; sizes the ping snapshot
	expiry   expiryQueue
}

// maxPings bounds concurrent pings: each ping is a short-lived goroutine that
// waits for its pong, so a burst of dead peers costs at most this many.
const maxPings = 1024

// closeParallelism bounds concurrent close handshakes during Shutdown.
const closeParallelism = 128

// NewHub starts a hub: one ping ticker per shard, and cfg.Bus if there is one.
func NewHub(cfg Config, log *slog.Logger) *Hub {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	h := &Hub{
		cfg:     cfg,
		log:     log,
		shards:  make([]*shard, cfg.Shards),
		shift:   uint(64 - bits.TrailingZeros(uint(cfg.Shards))),
		done:    make(chan struct{}),
		pingSem: make(chan struct{}, maxPings),
		dir:     newDirectory(),
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	for i := range h.shards {
		s := &shard{members: make(map[int64]map[*conn]struct{}), sessions: make(map[int64][]*conn)}
		h.shards[i] = s
		h.pingers.Go(func() { s.pingLoop(h) })
	}
	if cfg.Bus != nil {
		if cfg.NewEvent == nil {
			h.log.Error("push: Config.NewEvent is not set: events from other nodes reach binary sockets only")
		}
		// NewHub has no error return (it is wired once at startup); a hub
		// without its bus still serves its own node, so say it loudly.
		if err := cfg.Bus.Start(hubNode{h}); err != nil {
			h.log.Error("push: start bus; this node serves its own members only", "err", err)
		} else {
			h.bus = cfg.Bus
		}
	}
	return h
}

func (h *Hub) shardFor(member int64) *shard {
	// Fibonacci hashing: ids are sequential, so mix before taking the top bits.
	// With one shard the shift is 64 and the result 0.
	return h.shards[(uint64(member)*0x9E3779B97F4A7C15)>>h.shift]
}

// Publish sends ev to every receiver of every member in memberIDs: on this
// node directly, and through the bus to the other nodes hosting any of them
// (one message per node). It never blocks on a socket. memberIDs should be
// distinct. ev is shared by all recipients and encoded lazily, at most once
// per encoding on this node: the caller must not modify it after Publish.
// After Shutdown, Publish is a no-op.
func (h *Hub) Publish(memberIDs []int64, ev proto.Message) {
	if len(memberIDs) == 0 || ev == nil || h.closing.Load() {
		return
	}
	h.stats.published.Add(1)
	f := &frame{msg: ev, log: h.log}
	if h.bus != nil {
		// First, so the network hop overlaps the local fan-out. The bus
		// counts and logs what it cannot send; history covers the loss.
		h.bus.Publish(memberIDs, f.binary)
	}
	h.deliver(memberIDs, f)
}

// deliverEncoded fans out an event that another node published.
func (h *Hub) deliverEncoded(memberIDs []int64, event []byte) {
	h.deliver(memberIDs, newEncodedFrame(event, h.cfg.NewEvent, h.log))
}

// deliver is the local fan-out. One frame is shared by every recipient; a
// full queue marks its receiver for disconnection, done after the shard lock
// is released.
func (h *Hub) deliver(memberIDs []int64, f *frame) {
	if h.closing.Load() {
		return
	}
	var slow []*conn
	for _, id := range memberIDs {
		s := h.shardFor(id)
		s.mu.RLock()
		for c := range s.members[id] {
			if !c.enqueue(f) {
				slow = append(slow, c)
			}
		}
		s.mu.RUnlock()
	}
	for _, c := range slow {
		h.stats.dropped.Add(1) // the frame that did not fit
		h.shut(c, reasonSlow, false)
	}
}

// resync sends the resync notice to every receiver on this node, and through
// the bus to the members in remote that other nodes host.
func (h *Hub) resync(since time.Time, remote []int64) {
	if h.cfg.ResyncEvent == nil || h.closing.Load() {
		return
	}
	var local []int64
	for _, s := range h.shards {
		s.mu.RLock()
		for m := range s.members {
			local = append(local, m)
		}
		s.mu.RUnlock()
	}
	f := &frame{msg: h.cfg.ResyncEvent(since), log: h.log}
	if len(remote) > 0 && h.bus != nil {
		h.bus.Publish(remote, f.binary)
	}
	h.deliver(local, f)
	h.log.Info("push: told clients to resync", "since", since, "here", len(local), "elsewhere", len(remote))
}

// register adds c to its shard. It fails once Shutdown has begun: the flag is
// read under the shard lock that Shutdown's snapshot also takes, so every
// receiver is either refused or seen by Shutdown.
//
// The first receiver of a member on this node puts the member in the
// directory; with a bus, register returns only once the other nodes have
// been told (or announceWait has passed), so that an event published anywhere
// after the client saw its socket open (or its stream's headers) reaches it.
// That is what lets a client connect first and then read history without a
// gap, on any node.
func (h *Hub) register(c *conn) error {
	announced, err := h.add(c)
	if announced != nil {
		t := time.NewTimer(announceWait)
		select {
		case <-announced:
		case <-t.C:
		case <-h.ctx.Done():
		}
		t.Stop()
	}
	return err
}

// announceWait bounds how long register waits for the bus to announce a
// member; the bus gives up sooner on its own (NATSBus: one second).
const announceWait = 2 * time.Second

func (h *Hub) add(c *conn) (announced <-chan struct{}, err error) {
	s := c.shard
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.closing.Load() {
		return nil, ErrShutdown
	}
	m := s.members[c.member]
	if len(m) >= h.cfg.MaxPerMember {
		return nil, ErrTooManyReceivers
	}
	if m == nil {
		m = make(map[*conn]struct{}, 1)
		s.members[c.member] = m
		announced = h.dir.setLocal(c.member, true, time.Now().UnixMilli())
	}
	m[c] = struct{}{}
	s.sessions[c.session] = append(s.sessions[c.session], c)
	s.addExpiry(h, c)
	if c.socket {
		s.sockets++
		h.stats.conns.Add(1)
	} else {
		h.stats.subs.Add(1)
	}
	return announced, nil
}

func (h *Hub) unregister(c *conn) {
	s := c.shard
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.members[c.member]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(s.members, c.member)
			h.dir.setLocal(c.member, false, time.Now().UnixMilli())
		}
	}
	list := s.sessions[c.session]
	for i, x := range list {
		if x == c {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(s.sessions, c.session)
	} else {
		s.sessions[c.session] = list
	}
	s.removeExpiry(c)
	if c.socket {
		s.sockets--
		h.stats.conns.Add(-1)
	} else {
		h.stats.subs.Add(-1)
	}
}

// shut closes c once: it discards c's queue, unregisters it and then closes the
// socket with r (or wakes the subscriber). The close handshake can take
// seconds against an unresponsive peer, so unless wait is set it runs in its
// own goroutine.
func (h *Hub) shut(c *conn, r closeReason, wait bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.reason = r
	dropped := c.queue.reset()
	ws := c.ws // nil for a Subscription, or a socket not yet attached (attach closes it)
	c.mu.Unlock()

	h.stats.dropped.Add(uint64(dropped))
	if r == reasonSlow {
		h.stats.slow.Add(1)
		h.log.Info("push: slow consumer disconnected", "member", c.member, "session", c.session)
	}
	h.unregister(c)
	if !c.socket {
		// Only now tell the subscriber, so that once Next has returned the
		// end, the hub holds nothing of it.
		c.mu.Lock()
		c.err = r.err
		c.mu.Unlock()
		c.signal()
		return
	}
	if ws == nil {
		return
	}
	closeWS := func() { closeSocket(c, ws, r) }
	if wait {
		closeWS()
	} else {
		go closeWS()
	}
}

// closeSocket ends ws with r's close code and reason (code 0: at once, no handshake).
func closeSocket(c *conn, ws *websocket.Conn, r closeReason) {
	var err error
	if r.code == 0 {
		err = ws.CloseNow()
	} else {
		err = ws.Close(r.code, r.text)
	}
	if err != nil {
		c.hub.log.Debug("push: close socket", "member", c.member, "session", c.session, "code", r.code, "err", err)
	}
}

// CloseSession closes every socket (code 4001, "session revoked") and ends
// every Subscription (ErrSessionRevoked) of a session, for logout and revoke:
// on this node at once, and on the other nodes as soon as the bus brings
// them the word (milliseconds; nothing while the bus is down, see
// docs/CLUSTER.md).
func (h *Hub) CloseSession(sessionID int64) {
	if w := h.sessionWatch.Load(); w != nil && w.Revoked != nil {
		w.Revoked(sessionID)
	}
	h.closeLocalSession(sessionID)
	if h.bus != nil {
		h.bus.CloseSession(sessionID) // counted and logged by the bus
	}
}

// remoteRevoke closes a session that another node revoked.
func (h *Hub) remoteRevoke(sessionID int64) {
	if w := h.sessionWatch.Load(); w != nil && w.Revoked != nil {
		w.Revoked(sessionID)
	}
	h.closeLocalSession(sessionID)
}

// SessionWatch is told what a node's cache of sessions must forget, and when
// it cannot trust what it holds. Its funcs must not block.
type SessionWatch struct {
	// Revoked: a session was revoked, through this node (CloseSession) or
	// another (over the bus).
	Revoked func(sessionID int64)
	// BusDown: the bus lost its connection; revocations on other nodes
	// may go unheard from now on.
	BusDown func()
	// BusUp: the bus (re)connected; revocations sent while it was down
	// were lost to this node.
	BusUp func()
}

// WatchSessions installs w, replacing the one before (there is one cache per
// node). It returns whether the bus is connected now, or true without a bus:
// w hears of every change after that answer.
func (h *Hub) WatchSessions(w SessionWatch) (connected bool) {
	h.sessionWatch.Store(&w)
	if h.bus == nil {
		return true
	}
	return h.bus.Stats().Connected
}

// busConnected passes the bus's connection changes to the session watch.
func (h *Hub) busConnected(up bool) {
	w := h.sessionWatch.Load()
	switch {
	case w == nil:
	case up && w.BusUp != nil:
		w.BusUp()
	case !up && w.BusDown != nil:
		w.BusDown()
	}
}

// Sessions lists the sessions with a receiver on this node: after the bus
// was down, revocations may have been missed, and the caller checks these
// again.
func (h *Hub) Sessions() []int64 {
	var out []int64
	for _, s := range h.shards {
		s.mu.RLock()
		for id := range s.sessions {
			out = append(out, id)
		}
		s.mu.RUnlock()
	}
	return out
}

func (h *Hub) closeLocalSession(sessionID int64) {
	var found []*conn
	for _, s := range h.shards {
		s.mu.RLock()
		found = append(found, s.sessions[sessionID]...)
		s.mu.RUnlock()
	}
	for _, c := range found {
		h.shut(c, reasonRevoked, false)
	}
}

// Subscribe registers an RPC subscriber for p. It ends when ctx is done, on
// Close, or with ErrSlowConsumer, ErrSessionRevoked or ErrShutdown (see
// Subscription.Next). It fails with ErrTooManyReceivers when p's member has
// Config.MaxPerMember receivers already.
func (h *Hub) Subscribe(ctx context.Context, p Principal) (*Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("push: subscribe: %w", err)
	}
	c := h.newConn(p, false, encProto)
	c.wake = make(chan struct{}, 1)
	if err := h.register(c); err != nil {
		return nil, fmt.Errorf("push: subscribe: %w", err)
	}
	sub := &Subscription{c: c}
	sub.stop = context.AfterFunc(ctx, sub.Close)
	return sub, nil
}

// Shutdown stops the hub: it refuses new receivers, makes Publish a no-op,
// ends every Subscription with ErrShutdown and closes every socket with
// StatusGoingAway ("server shutting down"), several at a time. If ctx ends
// first, the remaining sockets are dropped without a handshake and ctx's error
// is returned. Shutdown is idempotent; later calls wait for the first.
//
// Call it before http.Server.Shutdown, which ignores hijacked connections.
func (h *Hub) Shutdown(ctx context.Context) error {
	if !h.closing.CompareAndSwap(false, true) {
		select {
		case <-h.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("push: shutdown: %w", ctx.Err())
		}
	}
	defer close(h.done)
	if h.bus != nil {
		// First: the other nodes forget this node's members at once and stop
		// sending their events here, rather than as each socket closes.
		if err := h.bus.Close(); err != nil {
			h.log.Warn("push: close bus", "err", err)
		}
	}
	defer h.dir.close()

	var all []*conn
	for _, s := range h.shards {
		s.mu.RLock()
		for _, m := range s.members {
			for c := range m {
				all = append(all, c)
			}
		}
		s.mu.RUnlock()
	}

	var wg sync.WaitGroup
	sem := make(chan struct{}, closeParallelism)
	var err error
launch:
	for _, c := range all {
		if !c.socket {
			h.shut(c, reasonShutdown, true)
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break launch
		}
		wg.Go(func() {
			defer func() { <-sem }()
			h.shut(c, reasonShutdown, true)
		})
	}
	closed := make(chan struct{})
	go func() { wg.Wait(); close(closed) }()
	select {
	case <-closed:
	case <-ctx.Done():
		err = fmt.Errorf("push: shutdown: %w", ctx.Err())
	}
	// Cancelling the hub context ends every read loop and ping, which drops
	// any socket still open (those left when ctx ended) and so ends its write.
	h.cancel()
	h.pingers.Wait()
	if err != nil {
		h.log.Warn("push: shutdown cut short", "err", err)
	}
	return err
}

// Done is closed once Shutdown has finished.
func (h *Hub) Done() <-chan struct{} { return h.done }

// Directory is the hub's directory: presence on this node and, with a bus,
// on the whole cluster.
func (h *Hub) Directory() *Directory { return h.dir }

// BusStats reports the bus's state; ok is false when the hub has no bus.
func (h *Hub) BusStats() (s BusStats, ok bool) {
	if h.bus == nil {
		return BusStats{}, false
	}
	return h.bus.Stats(), true
}

// Stats returns a snapshot of the hub's counters.
func (h *Hub) Stats() Stats {
	return Stats{
		Connections:             h.stats.conns.Load(),
		Subscriptions:           h.stats.subs.Load(),
		Published:               h.stats.published.Load(),
		Delivered:               h.stats.delivered.Load(),
		Messages:                h.stats.messages.Load(),
		Dropped:                 h.stats.dropped.Load(),
		SlowConsumerDisconnects: h.stats.slow.Load(),
		DeadPeers:               h.stats.dead.Load(),
	}
}
