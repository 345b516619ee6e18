package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// frame is one published event, shared by every recipient. Each wire encoding
// is computed at most once, by the first writer that needs it.
type frame struct {
	msg proto.Message
	log *slog.Logger

	binOnce, jsonOnce sync.Once
	bin, json         []byte
	binErr, jsonErr   error

	// An event from another node arrives encoded (bin); it is decoded at
	// most once, with newMsg, only if a JSON socket or a Subscription needs it.
	msgOnce sync.Once
	newMsg  func() proto.Message
	msgErr  error
}

// newEncodedFrame is a frame for an event that arrived in its binary encoding
// (from another node): binary sockets get bin as it is.
func newEncodedFrame(bin []byte, newMsg func() proto.Message, log *slog.Logger) *frame {
	f := &frame{bin: bin, newMsg: newMsg, log: log}
	f.binOnce.Do(func() {})
	return f
}

// message returns the event, decoding it first if it arrived encoded.
func (f *frame) message() (proto.Message, error) {
	f.msgOnce.Do(func() {
		if f.msg != nil {
			return
		}
		if f.newMsg == nil {
			f.msgErr = errors.New("decode event from another node: push.Config.NewEvent is not set")
		} else {
			m := f.newMsg()
			if err := proto.Unmarshal(f.bin, m); err != nil {
				f.msgErr = fmt.Errorf("decode %s from another node: %w", m.ProtoReflect().Descriptor().FullName(), err)
			} else {
				f.msg = m
				return
			}
		}
		f.log.Error("push: decode event", "err", f.msgErr)
	})
	return f.msg, f.msgErr
}

func (f *frame) binary() ([]byte, error) {
	f.binOnce.Do(func() {
		f.bin, f.binErr = proto.Marshal(f.msg)
		if f.binErr != nil {
			f.binErr = fmt.Errorf("marshal %s: %w", f.msg.ProtoReflect().Descriptor().FullName(), f.binErr)
			f.log.Error("push: encode event", "encoding", "proto", "err", f.binErr)
		}
	})
	return f.bin, f.binErr
}

func (f *frame) text() ([]byte, error) {
	f.jsonOnce.Do(func() {
		msg, err := f.message()
		if err != nil {
			f.jsonErr = err // logged by message
			return
		}
		f.json, f.jsonErr = protojson.Marshal(msg)
		if f.jsonErr != nil {
			f.jsonErr = fmt.Errorf("marshal %s to JSON: %w", f.msg.ProtoReflect().Descriptor().FullName(), f.jsonErr)
			f.log.Error("push: encode event", "encoding", "json", "err", f.jsonErr)
		}
	})
	return f.json, f.jsonErr
}

// conn is one receiver: a WebSocket (ws != nil) or an RPC Subscription.
//
// Its queue is a slice under mu, not a channel: nothing is ever closed that a
// publisher might send on, an idle receiver holds at most a small buffer (see
// fifo), and the writer is started and stopped under the lock that guards the
// queue.
//
// A socket has no goroutine of its own while idle. enqueue starts a writer when
// it finds none running (writing == false); the writer drains the queue and
// clears writing under mu only when it finds the queue empty, so an enqueue
// either sees a running writer that will pick its frame up, or starts a new one.
type conn struct {
	hub     *Hub
	shard   *shard
	member  int64
	session int64
	socket  bool          // a WebSocket, not a Subscription
	enc     encoding      // socket only: the subprotocol's wire format
	wake    chan struct{} // Subscription only: capacity 1, signalled and never closed

	mu      sync.Mutex
	ws      *websocket.Conn // set by attach, under mu, once the handshake is done
	queue   fifo
	writing bool        // a writer goroutine is running
	closed  bool        // set once, by Hub.shut; frames enqueued after are dropped
	reason  closeReason // why it was closed, for a socket attached after that
	err     error       // Subscription only: why it ended, set after it is unregistered

	expires   int64 // when its session expires, in Unix nanoseconds; 0: never
	expiryIdx int   // its place in the shard's expiryQueue, under shard.mu; -1: none

	// Owned by the running writer goroutine.
	lastWrite int64 // nanotime of the last message written; 0 before the first
	// When the write in flight began (nanotime), 0 when none: read by the
	// shard's watchdog.
	writeSince atomic.Int64
}

func (h *Hub) newConn(p Principal, socket bool, enc encoding) *conn {
	c := &conn{
		hub:       h,
		shard:     h.shardFor(p.MemberID),
		member:    p.MemberID,
		session:   p.SessionID,
		socket:    socket,
		enc:       enc,
		expiryIdx: -1,
	}
	if !p.ExpiresAt.IsZero() {
		c.expires = p.ExpiresAt.UnixNano()
	}
	return c
}

// attach gives a registered socket receiver its WebSocket once the handshake
// is done, and starts writing what was queued meanwhile. A receiver closed
// before that (shutdown, revoke) gets its socket dropped here.
func (c *conn) attach(ws *websocket.Conn) {
	c.mu.Lock()
	if c.closed {
		r := c.reason
		c.mu.Unlock()
		closeSocket(c, ws, r)
		return
	}
	c.ws = ws
	start := c.queue.len() > 0 && !c.writing
	if start {
		c.writing = true
	}
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// wsConn returns the receiver's WebSocket, nil before attach.
func (c *conn) wsConn() *websocket.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ws
}

// enqueue adds f without blocking. It returns false when the queue is full:
// the caller must then disconnect c as a slow consumer. Frames for a closed
// receiver are dropped.
func (c *conn) enqueue(f *frame) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.hub.stats.dropped.Add(1)
		return true
	}
	if c.queue.len() >= c.hub.cfg.QueueSize {
		c.mu.Unlock()
		return false
	}
	c.queue.push(f)
	start := c.ws != nil && !c.writing
	if start {
		c.writing = true
	}
	c.mu.Unlock()

	switch {
	case start:
		go c.writeLoop()
	case !c.socket:
		c.signal()
	}
	return true
}

// fifo is a receiver's queue of frames. Once drained it keeps a buffer of up
// to fifoKeep slots, so a receiver that keeps up enqueues without allocating,
// and drops a larger one, so a burst does not pin memory on an idle socket.
type fifo struct {
	buf  []*frame
	head int
}

const fifoKeep = 16 // 128 bytes per receiver at most, once drained

func (q *fifo) len() int { return len(q.buf) - q.head }

func (q *fifo) push(f *frame) {
	if q.head > 0 && len(q.buf) == cap(q.buf) { // reuse the consumed front before growing
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, f)
}

// peek appends the oldest n frames to dst without removing them; n must not
// exceed len.
func (q *fifo) peek(dst []*frame, n int) []*frame {
	return append(dst, q.buf[q.head:q.head+n]...)
}

// discard removes the oldest n frames; n must not exceed len.
func (q *fifo) discard(n int) {
	for range n {
		q.pop()
	}
}

// pop removes the oldest frame; the queue must not be empty.
func (q *fifo) pop() *frame {
	f := q.buf[q.head]
	q.buf[q.head] = nil
	q.head++
	if q.head == len(q.buf) {
		q.head = 0
		if cap(q.buf) > fifoKeep {
			q.buf = nil
		} else {
			q.buf = q.buf[:0]
		}
	}
	return f
}

// reset discards every frame and the buffer, and returns how many it dropped.
func (q *fifo) reset() int {
	n := q.len()
	*q = fifo{}
	return n
}

// signal wakes a Subscription's Next without blocking.
func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writeLoop writes queued frames back to back and exits when the queue is
// empty or the receiver is closed.
//
// A socket of a batched subprotocol gets, per WebSocket message, every frame
// queued when the writer looks, up to Config.BatchEvents events and
// Config.BatchBytes bytes: one write, one flush and one syscall for what the
// single-event subprotocols send as many. Batches grow with the load by
// themselves (a writer that falls behind finds more queued). Under load,
// CoalesceWindow adds a short wait after a write so the next batch gathers
// more; a socket that has not written within the window's reach is never
// delayed (see linger).
func (c *conn) writeLoop() {
	h := c.hub
	var batch []*frame // the frames of one message; reused for the writer's life
	for {
		c.mu.Lock()
		if c.closed || c.queue.len() == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		n := 1
		if c.enc.batched() {
			n = min(c.queue.len(), h.cfg.BatchEvents)
		}
		// Peek, then commit: encoding runs outside the lock (publishers keep
		// enqueueing meanwhile) and decides how many frames fit; only this
		// goroutine removes frames, so the first n are still the first n —
		// unless shut has emptied the queue, which it counts as dropped.
		batch = c.queue.peek(batch[:0], n)
		c.mu.Unlock()

		msg, k, buf := c.encode(batch)

		c.mu.Lock()
		if c.closed {
			c.writing = false
			c.mu.Unlock()
			releaseBuf(buf)
			return
		}
		c.queue.discard(k)
		c.mu.Unlock()
		clear(batch) // let the frames go once written

		if h.testHookWrite != nil {
			h.testHookWrite(c)
		}
		if msg.events == 0 { // nothing encodable: logged once per frame by frame.binary/text
			h.stats.dropped.Add(uint64(k))
			releaseBuf(buf)
			continue
		}
		err := c.write(msg)
		releaseBuf(buf)
		h.stats.dropped.Add(uint64(k - msg.events)) // frames that failed to encode
		if err != nil {
			h.stats.dropped.Add(uint64(msg.events))
			h.log.Debug("push: write", "member", c.member, "session", c.session, "err", err)
			h.shut(c, reasonGone, true) // the library has closed the socket already
			continue                    // the loop sees closed and exits
		}
		h.stats.delivered.Add(uint64(msg.events))
		h.stats.messages.Add(1)
		c.linger()
	}
}

// message is one WebSocket message ready to write.
type message struct {
	typ    websocket.MessageType
	data   []byte
	events int // events it carries
}

// encode turns the oldest frames into one message: the first frame alone for
// a single-event subprotocol, else as many of frames as fit in BatchBytes
// (always at least one, however large). It returns the message, how many
// frames it consumed (those that failed to encode included; message.events
// counts the rest), and the pooled buffer to release after the write (nil
// when none was taken).
func (c *conn) encode(frames []*frame) (message, int, *[]byte) {
	json := c.enc.json()
	typ := websocket.MessageBinary
	if json {
		typ = websocket.MessageText
	}
	if !c.enc.batched() {
		b, err := frames[0].encoded(json)
		if err != nil {
			return message{typ: typ}, 1, nil
		}
		return message{typ: typ, data: b, events: 1}, 1, nil
	}

	// First pass: how many frames fit. Encodings are cached in the frames
	// (frame.binary/text), so the second pass only copies.
	size, k, events := batchOverhead(json), 0, 0
	for _, f := range frames {
		b, err := f.encoded(json)
		if err != nil {
			k++ // dropped, counted by the caller
			continue
		}
		cost := batchCost(json, len(b))
		if events > 0 && size+cost > c.hub.cfg.BatchBytes {
			break
		}
		size += cost
		events++
		k++
	}
	if events == 0 {
		return message{typ: typ}, k, nil
	}
	buf := batchBufs.Get().(*[]byte)
	b := slices.Grow((*buf)[:0], size)
	if json {
		b = append(b, jsonBatchOpen...)
	}
	first := true
	for _, f := range frames[:k] {
		ev, err := f.encoded(json)
		if err != nil {
			continue
		}
		b = appendBatchEvent(b, json, first, ev)
		first = false
	}
	if json {
		b = append(b, jsonBatchEnd...)
	}
	*buf = b
	return message{typ: typ, data: b, events: events}, k, buf
}

func releaseBuf(buf *[]byte) {
	if buf != nil && cap(*buf) <= maxPooledBatch {
		batchBufs.Put(buf)
	}
}

var errEncode = errors.New("push: encode event")

// encoded returns the frame's event in the socket's encoding.
func (f *frame) encoded(json bool) ([]byte, error) {
	var b []byte
	var err error
	if json {
		b, err = f.text()
	} else {
		b, err = f.binary()
	}
	if err != nil {
		return nil, errEncode
	}
	return b, nil
}

// write writes one message, with no deadline of its own: a per-write
// context costs a timer and the library's context.AfterFunc (9% of the
// server's CPU in a busy group, one to three events per write). Instead the
// writer marks when its write began and the shard's watchdog drops a socket
// whose write has run longer than WriteTimeout (see pingLoop); closing the
// socket ends the write, as Shutdown's closing does.
func (c *conn) write(m message) error {
	c.writeSince.Store(nanotime())
	err := c.ws.Write(context.Background(), m.typ, m.data)
	c.writeSince.Store(0)
	if err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// linger holds a busy batched socket's writer for CoalesceWindow after a
// write, so that what arrives meanwhile leaves in one message instead of
// many. A socket counts as busy when its previous write was less than
// coalesceBusy windows before this one: at a trickle of events each is
// written at once, and the wait (a timer and a parked goroutine) is paid only
// where it saves writes. An event for a socket with no writer is never held:
// enqueue starts a writer, which writes first.
func (c *conn) linger() {
	w := c.hub.cfg.CoalesceWindow
	if w <= 0 || !c.enc.batched() {
		return
	}
	now := nanotime()
	busy := c.lastWrite != 0 && now-c.lastWrite < coalesceBusy*int64(w)
	c.lastWrite = now
	if !busy {
		return
	}
	if c.hub.testHookLinger != nil {
		c.hub.testHookLinger(c)
		return
	}
	time.Sleep(w)
}

// coalesceBusy: a socket whose writes come less than this many coalescing
// windows apart is busy (see linger).
const coalesceBusy = 2

// pingLoop pings the shard's sockets every PingInterval and, four times per
// WriteTimeout, drops those whose write has taken longer than WriteTimeout (a
// peer that stopped reading: its TCP window is shut). One goroutine per
// shard replaces a ticker (and a write deadline) per socket; each ping runs
// in a short-lived goroutine (bounded by Hub.pingSem) so a dead peer's
// PingTimeout delays no one else, and no lock is held while pinging.
func (s *shard) pingLoop(h *Hub) {
	t := time.NewTicker(h.cfg.PingInterval)
	defer t.Stop()
	watch := time.NewTicker(max(h.cfg.WriteTimeout/4, time.Millisecond))
	defer watch.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-watch.C:
			s.dropStuckWriters(h)
			continue
		case <-t.C:
		}
		s.mu.RLock()
		socks := make([]*conn, 0, s.sockets)
		for _, m := range s.members {
			for c := range m {
				if c.socket {
					socks = append(socks, c)
				}
			}
		}
		s.mu.RUnlock()
		for _, c := range socks {
			select {
			case h.pingSem <- struct{}{}:
			case <-h.ctx.Done():
				return
			}
			go func() {
				defer func() { <-h.pingSem }()
				c.ping()
			}()
		}
	}
}

// dropStuckWriters closes the shard's sockets whose write in flight began
// more than WriteTimeout ago; the write then fails and its writer exits.
func (s *shard) dropStuckWriters(h *Hub) {
	deadline := nanotime() - int64(h.cfg.WriteTimeout)
	var stuck []*conn
	s.mu.RLock()
	for _, m := range s.members {
		for c := range m {
			if since := c.writeSince.Load(); since != 0 && since < deadline {
				stuck = append(stuck, c)
			}
		}
	}
	s.mu.RUnlock()
	for _, c := range stuck {
		h.stats.dead.Add(1)
		h.log.Debug("push: write timed out", "member", c.member, "session", c.session, "timeout", h.cfg.WriteTimeout)
		h.shut(c, reasonGone, false)
	}
}

// ping drops the socket if the peer does not answer within PingTimeout.
// coder/websocket answers our ping's pong in the socket's read loop.
func (c *conn) ping() {
	h := c.hub
	ctx, cancel := context.WithTimeout(h.ctx, h.cfg.PingTimeout)
	defer cancel()
	ws := c.wsConn()
	if ws == nil {
		return // handshake still in progress
	}
	err := ws.Ping(ctx)
	if err == nil || h.ctx.Err() != nil { // on shutdown, Shutdown does the closing
		return
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return
	}
	if errors.Is(err, context.DeadlineExceeded) {
		h.stats.dead.Add(1)
		h.log.Debug("push: dead peer dropped", "member", c.member, "session", c.session, "err", err)
	}
	h.shut(c, reasonGone, true)
}
