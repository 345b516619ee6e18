package push

import (
	"context"

	"google.golang.org/protobuf/proto"
)

// Subscription receives a member's events for a server-streaming RPC. It has no
// goroutine of its own: the RPC handler's goroutine pulls with Next. It shares
// the socket's bounded queue, so a subscriber that falls QueueSize events
// behind is ended with ErrSlowConsumer.
type Subscription struct {
	c    *conn
	stop func() bool // detaches the Subscribe ctx watcher
}

// Next returns the next event, waiting for one until ctx is done. It returns
// ErrSlowConsumer, ErrSessionRevoked, ErrShutdown or ErrClosed (Close, or the
// Subscribe ctx ended) once the subscription has ended, and ctx.Err() if ctx
// ends first. Events still queued when the subscription ends are discarded:
// the client resyncs over RPC. Next must not be called concurrently.
// The returned event is shared with other recipients: do not modify it.
func (s *Subscription) Next(ctx context.Context) (proto.Message, error) {
	c := s.c
	for {
		c.mu.Lock()
		if c.err != nil { // set by Hub.shut once c is unregistered
			err := c.err
			c.mu.Unlock()
			return nil, err
		}
		if c.queue.len() > 0 {
			f := c.queue.pop()
			c.mu.Unlock()
			msg, err := f.message()
			if err != nil { // logged once per frame by message
				c.hub.stats.dropped.Add(1)
				continue
			}
			c.hub.stats.delivered.Add(1)
			return msg, nil
		}
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close ends the subscription; Next then returns ErrClosed. Idempotent.
func (s *Subscription) Close() {
	s.stop()
	s.c.hub.shut(s.c, reasonGone, false)
}
