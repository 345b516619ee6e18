package push

import (
	"container/heap"
	"time"
)

// Receivers are closed when their session expires (close code 4001, "session
// expired"; ErrSessionExpired for a Subscription), as they are when it is
// revoked: from that moment the server refuses the session's token.
//
// A timer per receiver would cost a runtime timer and a closure each, some
// 150 bytes (15 MB at 100k sockets). Instead each shard keeps the receivers
// that expire in a min-heap by expiry, with one timer set to the earliest:
// 24 bytes per receiver, O(log n) to add and remove, under the shard lock that
// register and unregister hold anyway.
type expiryQueue struct {
	heap  expiryHeap
	at    int64 // when the timer fires, in Unix nanoseconds; 0: not armed
	timer *time.Timer
}

// addExpiry queues c if its session expires. The caller holds s.mu.
func (s *shard) addExpiry(h *Hub, c *conn) {
	if c.expires == 0 {
		return
	}
	q := &s.expiry
	heap.Push(&q.heap, c)
	if q.at == 0 || c.expires < q.at {
		s.armExpiry(h, c.expires)
	}
}

// removeExpiry takes c out of the queue, if it is there. The caller holds s.mu.
func (s *shard) removeExpiry(c *conn) {
	q := &s.expiry
	if c.expiryIdx < 0 {
		return
	}
	heap.Remove(&q.heap, c.expiryIdx)
	if len(q.heap) == 0 && q.timer != nil {
		// Stop rather than let it fire for nobody: a pending timer would keep
		// the hub reachable until a session's expiry, weeks away.
		q.timer.Stop()
		q.at = 0
	}
}

// armExpiry sets the shard's timer to at. The caller holds s.mu.
func (s *shard) armExpiry(h *Hub, at int64) {
	q := &s.expiry
	q.at = at
	d := time.Until(time.Unix(0, at))
	if q.timer == nil {
		q.timer = time.AfterFunc(d, func() { s.expire(h) })
		return
	}
	q.timer.Reset(d)
}

// expire closes every receiver whose session has expired and sets the timer
// to the next expiry. A timer that fires early (its receiver was removed)
// closes nothing.
func (s *shard) expire(h *Hub) {
	now := time.Now().UnixNano()
	var due []*conn
	s.mu.Lock()
	q := &s.expiry
	q.at = 0
	for len(q.heap) > 0 && q.heap[0].expires <= now {
		due = append(due, heap.Pop(&q.heap).(*conn))
	}
	if len(q.heap) > 0 {
		s.armExpiry(h, q.heap[0].expires)
	}
	s.mu.Unlock()
	for _, c := range due {
		h.shut(c, reasonExpired, false)
	}
}

// expiryHeap orders receivers by expiry; each knows its index (conn.expiryIdx)
// so that unregister removes it in O(log n).
type expiryHeap []*conn

func (q expiryHeap) Len() int           { return len(q) }
func (q expiryHeap) Less(i, j int) bool { return q[i].expires < q[j].expires }
func (q expiryHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].expiryIdx, q[j].expiryIdx = i, j
}

func (q *expiryHeap) Push(x any) {
	c := x.(*conn)
	c.expiryIdx = len(*q)
	*q = append(*q, c)
}

func (q *expiryHeap) Pop() any {
	old := *q
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	c.expiryIdx = -1
	return c
}
