package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/karlmalone/karlmalone/gen/db"
	"github.com/karlmalone/karlmalone/store"
)

// sendPipeline stores messages with group commit and pushes them in seq order.
//
// A durable commit costs a WAL flush, so one transaction per message caps a
// server at a few thousand messages per second. Instead, sends that arrive
// while a batch is in flight wait, and then go to the database together: one
// pipelined round trip, one implicit transaction, one commit. Each caller
// still gets its own seq and its own error.
//
// Sends are sharded by conversation (sendKey). A shard runs one batch at a time and
// publishes its messages in batch order after the commit, so this node pushes
// every conversation's messages in seq order. A shard's worker goroutine
// exists only while the shard has work (the push hub's writers do the same).
// GOMAXPROCS shards measured best (BenchmarkSendMessage on a durable
// database, 2 cores): fewer round trips leave more CPU for everything else,
// and PostgreSQL runs the batches of different shards in parallel. The price:
// a batch that waits on a row lock (a sender on another node) delays the
// other conversations of its shard.
type sendPipeline struct {
	db      *store.Store
	log     *slog.Logger
	shards  []sendShard
	timeout time.Duration // bounds one batch, whatever its callers' deadlines
	busy    inflight      // sends accepted and not yet answered (drain)
}

// maxSendBatch bounds a batch: enough to amortise a commit, small enough that
// one batch never holds a conversation's row lock for long.
const maxSendBatch = 256

type sendShard struct {
	mu      sync.Mutex
	queue   []*sendJob
	running bool
}

// sendJob is one SendMessage waiting for its batch.
type sendJob struct {
	arg db.CreateMessageParams
	// stored runs on the shard's worker right after the commit, in seq
	// order, before the next batch: it publishes the message.
	stored func(db.CreateMessageRow)
	done   chan sendResult // capacity 1: the worker never blocks on it
}

type sendResult struct {
	row db.CreateMessageRow
	err error
}

func newSendPipeline(st *store.Store, log *slog.Logger) *sendPipeline {
	return &sendPipeline{
		db:      st,
		log:     log,
		shards:  make([]sendShard, runtime.GOMAXPROCS(0)),
		timeout: 30 * time.Second,
	}
}

// send stores arg (store.ErrNotFound when the sender may not post there or has
// used the client_msg_id already) and calls stored after the commit. If ctx
// ends first, send returns ctx's error; the message may still be stored and
// pushed, and a retry with the same client_msg_id finds it.
func (p *sendPipeline) send(ctx context.Context, arg db.CreateMessageParams, stored func(db.CreateMessageRow)) (db.CreateMessageRow, error) {
	j := &sendJob{arg: arg, stored: stored, done: make(chan sendResult, 1)}
	p.busy.add() // done by run, once the job is answered
	sh := &p.shards[sendKey(arg)*0x9E3779B97F4A7C15>>32%uint64(len(p.shards))]
	sh.mu.Lock()
	sh.queue = append(sh.queue, j)
	start := !sh.running
	sh.running = true
	sh.mu.Unlock()
	if start {
		go p.work(sh)
	}
	select {
	case r := <-j.done:
		return r.row, r.err
	case <-ctx.Done():
		return db.CreateMessageRow{}, ctx.Err()
	}
}

// sendKey names the conversation a send goes to before the database does:
// the group, or the pair of members. Every send to one conversation has the
// same key, so it lands in the same shard.
func sendKey(a db.CreateMessageParams) uint64 {
	if a.GroupID != nil {
		return uint64(*a.GroupID)<<1 | 1
	}
	lo, hi := a.SenderID, *a.PeerID
	if lo > hi {
		lo, hi = hi, lo
	}
	return (uint64(lo)*0x9E3779B97F4A7C15 ^ uint64(hi)) << 1
}

// work runs the shard's batches until its queue is empty.
func (p *sendPipeline) work(sh *sendShard) {
	for {
		sh.mu.Lock()
		n := min(len(sh.queue), maxSendBatch)
		if n == 0 {
			sh.running = false
			sh.queue = nil
			sh.mu.Unlock()
			return
		}
		batch := sh.queue[:n:n]
		sh.queue = sh.queue[n:]
		sh.mu.Unlock()
		p.run(batch)
	}
}

// run stores one batch and answers its callers. The batch is one implicit
// transaction: if any statement fails (two concurrent uses of one
// client_msg_id, say) or the commit does (a deferred constraint, a lost
// connection), none of it is stored, so each message is tried again on its
// own. Only messages whose commit was confirmed are published and answered
// with a seq: a seq handed out by a transaction that did not commit is given
// again to the next message.
func (p *sendPipeline) run(batch []*sendJob) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	results, err := p.store(ctx, batch)
	if err != nil && len(batch) > 1 {
		p.log.Warn("send batch failed; storing its messages one by one", "batch", len(batch), "err", err)
		for i, j := range batch {
			r, _ := p.store(ctx, []*sendJob{j})
			results[i] = r[0]
		}
	}
	for i, j := range batch {
		if results[i].err == nil {
			j.stored(results[i].row)
		}
		j.done <- results[i]
		p.busy.done()
	}
}

// drain waits until every send accepted so far is stored (or failed) and
// published, even those whose callers went away: then the pool may close.
func (p *sendPipeline) drain(ctx context.Context) error { return p.busy.wait(ctx) }

// store runs one batch in one round trip and returns each message's result,
// and the batch's error when nothing of it was stored: then every message
// carries that error, or its own if its statement failed.
//
// The batch's implicit transaction commits when its results are closed;
// store.Batch reports that commit: a commit that fails is a failed batch,
// whatever the statements returned.
func (p *sendPipeline) store(ctx context.Context, batch []*sendJob) ([]sendResult, error) {
	args := make([]db.CreateMessageParams, len(batch))
	for i, j := range batch {
		args[i] = j.arg
	}
	results := make([]sendResult, len(batch))
	var batchErr error
	commitErr := p.db.Batch(func(q *db.Queries) {
		q.CreateMessage(ctx, args).QueryRow(func(i int, row db.CreateMessageRow, err error) {
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				err = fmt.Errorf("create message: %w", err)
				if batchErr == nil {
					batchErr = err
				}
			}
			results[i] = sendResult{row, err}
		})
	})
	if batchErr == nil && commitErr != nil {
		batchErr = fmt.Errorf("commit messages: %w", commitErr)
	}
	if batchErr != nil {
		for i, r := range results {
			if r.err == nil || errors.Is(r.err, store.ErrNotFound) {
				results[i] = sendResult{err: batchErr}
			}
		}
	}
	return results, batchErr
}
