package notify

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Stats counts what a queue did with what it was given.
type Stats struct {
	Queued    int   // waiting now
	Accepted  int64 // taken into the queue (coalesced ones included)
	Coalesced int64 // merged into one already waiting
	Dropped   int64 // refused because the queue was full (or closed)
	Delivered int64 // delivered
	Failed    int64 // given up on after the sender's retries
}

// Queue holds deliveries for a pool of workers. Put never blocks: a full
// queue drops what it is given and counts it. Deliveries with the same key
// that wait together are merged into one (coalesced) when merge is set; one
// already being delivered is not, so a burst that arrives during a delivery
// becomes one more delivery.
type Queue[T any] struct {
	deliver func(context.Context, T) error
	merge   func(old, new T) T
	size    int
	log     *slog.Logger

	mu      sync.Mutex
	cond    *sync.Cond
	waiting map[int64]T
	order   []int64 // keys of waiting, oldest first
	closed  bool

	accepted, coalesced, dropped, delivered, failed atomic.Int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewQueue starts workers that hand each entry to deliver. merge, if not
// nil, combines a new entry with one waiting under the same key.
func NewQueue[T any](size, workers int, deliver func(context.Context, T) error, merge func(old, new T) T, log *slog.Logger) *Queue[T] {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q := &Queue[T]{deliver: deliver, merge: merge, size: size, log: log, waiting: make(map[int64]T)}
	q.cond = sync.NewCond(&q.mu)
	ctx, cancel := context.WithCancel(context.Background())
	q.cancel = cancel
	for range workers {
		q.wg.Add(1)
		go q.work(ctx)
	}
	return q
}

// Put queues v under key, or merges it into the entry waiting under key. It
// reports false when v was dropped.
func (q *Queue[T]) Put(key int64, v T) bool {
	q.mu.Lock()
	if old, ok := q.waiting[key]; ok && q.merge != nil && !q.closed {
		q.waiting[key] = q.merge(old, v)
		q.mu.Unlock()
		q.accepted.Add(1)
		q.coalesced.Add(1)
		return true
	}
	if q.closed || len(q.order) >= q.size {
		q.mu.Unlock()
		q.dropped.Add(1)
		return false
	}
	q.waiting[key] = v
	q.order = append(q.order, key)
	q.mu.Unlock()
	q.accepted.Add(1)
	q.cond.Signal()
	return true
}

func (q *Queue[T]) work(ctx context.Context) {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		for len(q.order) == 0 && !q.closed {
			q.cond.Wait()
		}
		if q.closed {
			q.mu.Unlock()
			return
		}
		key := q.order[0]
		q.order = q.order[1:]
		v := q.waiting[key]
		delete(q.waiting, key)
		q.mu.Unlock()
		if err := q.deliver(ctx, v); err != nil {
			q.failed.Add(1)
			q.log.Warn("webhook delivery failed", "key", key, "err", err)
			continue
		}
		q.delivered.Add(1)
	}
}

// Stats returns the counters.
func (q *Queue[T]) Stats() Stats {
	q.mu.Lock()
	n := len(q.order)
	q.mu.Unlock()
	return Stats{
		Queued: n, Accepted: q.accepted.Load(), Coalesced: q.coalesced.Load(), Dropped: q.dropped.Load(),
		Delivered: q.delivered.Load(), Failed: q.failed.Load(),
	}
}

// Close stops the workers: deliveries in flight are cancelled, those waiting
// are dropped (and counted), and Put drops from now on.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	lost := len(q.order)
	q.order, q.waiting = nil, nil
	q.mu.Unlock()
	q.dropped.Add(int64(lost))
	q.cond.Broadcast()
	q.cancel()
	q.wg.Wait()
	if lost > 0 {
		q.log.Warn("webhook queue closed with deliveries waiting", "dropped", lost)
	}
}
