package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
	json    bool          // socket speaks protojson text frames, not binary protobuf
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
}

func (h *Hub) newConn(p Principal, socket, json bool) *conn {
	c := &conn{
		hub:       h,
		shard:     h.shardFor(p.MemberID),
		member:    p.MemberID,
		session:   p.SessionID,
		socket:    socket,
		json:      json,
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
func (c *conn) writeLoop() {
	h := c.hub
	for {
		c.mu.Lock()
		if c.closed || c.queue.len() == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		f := c.queue.pop()
		c.mu.Unlock()

		if h.testHookWrite != nil {
			h.testHookWrite(c)
		}
		if err := c.write(f); err != nil {
			h.stats.dropped.Add(1)
			if errors.Is(err, errEncode) {
				continue // logged once per frame by frame.binary/text; the socket is fine
			}
			h.log.Debug("push: write", "member", c.member, "session", c.session, "err", err)
			h.shut(c, reasonGone, true) // the library has closed the socket already
			continue                    // the loop sees closed and exits
		}
		h.stats.delivered.Add(1)
	}
}

var errEncode = errors.New("push: encode event")

func (c *conn) write(f *frame) error {
	typ, b, err := websocket.MessageBinary, []byte(nil), error(nil)
	if c.json {
		typ = websocket.MessageText
		b, err = f.text()
	} else {
		b, err = f.binary()
	}
	if err != nil {
		return errEncode
	}
	ctx, cancel := context.WithTimeout(c.hub.ctx, c.hub.cfg.WriteTimeout)
	defer cancel()
	if err := c.ws.Write(ctx, typ, b); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// pingLoop pings the shard's sockets every PingInterval. One goroutine per
// shard replaces a ticker per socket; each ping runs in a short-lived goroutine
// (bounded by Hub.pingSem) so a dead peer's PingTimeout delays no one else,
// and no lock is held while pinging.
func (s *shard) pingLoop(h *Hub) {
	t := time.NewTicker(h.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
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
