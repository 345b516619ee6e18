package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/karlmalone/karlmalone/store"
)

// sessionSweepBatch and sessionSweepBatches bound one run of the sweep:
// batches of this many rows, each its own short statement, at most this
// many batches (what is left waits for the next run).
const (
	sessionSweepBatch   = 1000
	sessionSweepBatches = 10
)

// SweepSessions deletes expired sessions every interval (0: never) until
// ctx ends. An expired session already fails authentication; the sweep only
// keeps the table from growing for ever.
func SweepSessions(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := SweepExpiredSessions(ctx, pool, sessionSweepBatch, sessionSweepBatches)
		switch {
		case err != nil && ctx.Err() == nil:
			log.WarnContext(ctx, "sweep expired sessions", "deleted", n, "err", err)
		case n > 0:
			log.InfoContext(ctx, "swept expired sessions", "deleted", n)
		}
	}
}

// SweepExpiredSessions is one run of the sweep: up to batches statements
// deleting up to batch expired sessions each, stopping at the first that
// finds fewer. It returns how many it deleted.
func SweepExpiredSessions(ctx context.Context, pool *pgxpool.Pool, batch, batches int) (int64, error) {
	q := store.New(pool).Queries()
	var total int64
	for range batches {
		n, err := q.DeleteExpiredSessions(ctx, int32(batch))
		total += n
		if err != nil {
			return total, fmt.Errorf("delete expired sessions: %w", err)
		}
		if n < int64(batch) {
			break
		}
	}
	return total, nil
}
