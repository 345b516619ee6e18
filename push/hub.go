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
// The package knows nothing about the project's generated types: an event is
// any proto.Message.
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
// ErrSlowConsumer → ResourceExhausted or Unavailable, ErrSessionRevoked →
// Unauthenticated, ErrShutdown → Unavailable).
var (
	ErrSlowConsumer   = errors.New("push: too slow: resync")
	ErrSessionRevoked = errors.New("push: session revoked")
	ErrShutdown       = errors.New("push: server shutting down")
	ErrClosed         = errors.New("push: closed")
)

// StatusSessionRevoked is the WebSocket close code sent by CloseSession.
// 4000–4999 is the private-use range of RFC 6455.
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
	reasonShutdown       = closeReason{websocket.StatusGoingAway, "server shutting down", ErrShutdown}
	reasonUnexpectedData = closeReason{websocket.StatusPolicyViolation, "clients send no messages", ErrClosed}
	reasonGone           = closeReason{0, "", ErrClosed}
)

// Config tunes the hub. Zero fields take the defaults documented beside them.
type Config struct {
	Shards         int           // default 4*GOMAXPROCS; always rounded up to a power of two
	QueueSize      int           // per-receiver outbound queue, in frames; default 256
	WriteTimeout   time.Duration // per write (a socket whose write takes longer is dropped); default 5s
	PingInterval   time.Duration // default 25s
	PingTimeout    time.Duration // default 5s; a dead peer is dropped within PingInterval+PingTimeout
	ReadLimit      int64         // client frame limit; default 4 KiB (clients send nothing meaningful)
	OriginPatterns []string      // passed to websocket.AcceptOptions
	// Batched subprotocols: most events and bytes per WebSocket message
	// (defaults 64 and 16 KiB). One event larger than BatchBytes goes alone.
	BatchEvents, BatchBytes int
	// CoalesceWindow: a busy batched socket's writer waits this long after a
	// write so the next message carries more (default 0: off). A socket that
	// has not written lately is never delayed.
	CoalesceWindow time.Duration
	// Bus carries events between nodes. Default: NewLocalBus() (this process only).
	Bus Bus
}

func (c Config) withDefaults() Config {
	if c.Shards <= 0 {
		c.Shards = 4 * runtime.GOMAXPROCS(0)
	}
	c.Shards = 1 << bits.Len(uint(c.Shards-1)) // next power of two (1 stays 1)
	if c.QueueSize <= 0 {
		c.QueueSize = 256
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = 5 * time.Second
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = 4 << 10
	}
	if c.BatchEvents <= 0 {
		c.BatchEvents = 64
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = 16 << 10
	}
	if c.Bus == nil {
		c.Bus = NewLocalBus()
	}
	return c
}

// Principal is an authenticated caller: a member on one of its sessions (devices).
type Principal struct{ MemberID, SessionID int64 }

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

	busCancel func()
	closing   atomic.Bool   // set once by Shutdown; read by register under the shard lock
	done      chan struct{} // closed when Shutdown has finished
	pingers   sync.WaitGroup
	pingSem   chan struct{} // bounds concurrent pings across shards

	stats counters

	// Test hooks, set by tests before the first receiver registers.
	testHookWrite      func(*conn) // in the writer goroutine, before each socket write
	testHookLinger     func(*conn) // replaces linger's sleep
	testHookRegistered func(*conn) // after a socket is registered (the client may not know yet)
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
}

// maxPings bounds concurrent pings: each ping is a short-lived goroutine that
// waits for its pong, so a burst of dead peers costs at most this many.
const maxPings = 1024

// closeParallelism bounds concurrent close handshakes during Shutdown.
const closeParallelism = 128

// NewHub starts a hub: one ping ticker per shard, and a subscription to
// cfg.Bus whose deliveries fan out to this node's receivers.
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
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	for i := range h.shards {
		s := &shard{members: make(map[int64]map[*conn]struct{}), sessions: make(map[int64][]*conn)}
		h.shards[i] = s
		h.pingers.Go(func() { s.pingLoop(h) })
	}
	cancel, err := cfg.Bus.Subscribe(h.deliver)
	if err != nil {
		// NewHub has no error return (it is wired once at startup); a hub
		// that cannot hear its bus still serves sockets, so say it loudly.
		h.log.Error("push: subscribe to bus; events will not be delivered", "err", err)
		cancel = func() {}
	}
	h.busCancel = cancel
	return h
}

func (h *Hub) shardFor(member int64) *shard {
	// Fibonacci hashing: ids are sequential, so mix before taking the top bits.
	// With one shard the shift is 64 and the result 0.
	return h.shards[(uint64(member)*0x9E3779B97F4A7C15)>>h.shift]
}

// Publish sends ev to every receiver of every member in memberIDs, through the
// bus (so other nodes' receivers get it too). It never blocks on a socket.
// memberIDs should be distinct. ev is shared by all recipients and encoded
// lazily: the caller must not modify it after Publish. After Shutdown, Publish
// is a no-op.
func (h *Hub) Publish(memberIDs []int64, ev proto.Message) {
	if len(memberIDs) == 0 || ev == nil || h.closing.Load() {
		return
	}
	h.stats.published.Add(1)
	if err := h.cfg.Bus.Publish(h.ctx, memberIDs, ev); err != nil {
		h.log.Warn("push: publish to bus", "members", len(memberIDs), "err", err)
	}
}

// deliver is the bus's callback: the local fan-out. One frame is shared by
// every recipient; a full queue marks its receiver for disconnection, done
// after the shard lock is released.
func (h *Hub) deliver(memberIDs []int64, ev proto.Message) {
	if h.closing.Load() {
		return
	}
	var f *frame // allocated for the first local recipient: none here, no cost
	var slow []*conn
	for _, id := range memberIDs {
		s := h.shardFor(id)
		s.mu.RLock()
		for c := range s.members[id] {
			if f == nil {
				f = &frame{msg: ev, log: h.log}
			}
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

// register adds c to its shard. It fails once Shutdown has begun: the flag is
// read under the shard lock that Shutdown's snapshot also takes, so every
// receiver is either refused or seen by Shutdown.
func (h *Hub) register(c *conn) error {
	s := c.shard
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.closing.Load() {
		return ErrShutdown
	}
	m := s.members[c.member]
	if m == nil {
		m = make(map[*conn]struct{}, 1)
		s.members[c.member] = m
	}
	m[c] = struct{}{}
	s.sessions[c.session] = append(s.sessions[c.session], c)
	if c.socket {
		s.sockets++
		h.stats.conns.Add(1)
	} else {
		h.stats.subs.Add(1)
	}
	return nil
}

func (h *Hub) unregister(c *conn) {
	s := c.shard
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.members[c.member]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(s.members, c.member)
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
// every Subscription (ErrSessionRevoked) of a session, for logout and revoke.
func (h *Hub) CloseSession(sessionID int64) {
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
// Subscription.Next).
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
	h.busCancel()

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
