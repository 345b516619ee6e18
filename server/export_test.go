package server

import (
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/karlmalone/karlmalone/gen/db"
	"github.com/karlmalone/karlmalone/store"
)

// SendBatchForTest runs args through the send pipeline as one batch and
// returns each message's row and error, for tests of the group commit.
func SendBatchForTest(pool *pgxpool.Pool, args []db.CreateMessageParams) ([]db.CreateMessageRow, []error) {
	return SendBatchLoggedForTest(pool, slog.New(slog.DiscardHandler), args)
}

// SendBatchLoggedForTest is SendBatchForTest with the pipeline logging to log.
func SendBatchLoggedForTest(pool *pgxpool.Pool, log *slog.Logger, args []db.CreateMessageParams) ([]db.CreateMessageRow, []error) {
	p := newSendPipeline(store.New(pool), log)
	jobs := make([]*sendJob, len(args))
	for i, a := range args {
		jobs[i] = &sendJob{arg: a, stored: func(db.CreateMessageRow) {}, done: make(chan sendResult, 1)}
		p.busy.add() // as send does
	}
	p.run(jobs)
	rows, errs := make([]db.CreateMessageRow, len(args)), make([]error, len(args))
	for i, j := range jobs {
		r := <-j.done
		rows[i], errs[i] = r.row, r.err
	}
	return rows, errs
}

// SetAuthHookForTest makes the server built from d call hook after every
// accepted token, before the request goes on: tests run a revocation there.
func SetAuthHookForTest(d *Deps, hook func(Caller)) { d.testHookAuthenticated = hook }

// SetExportPageForTest makes GET /v1/export read n rows at a time, and
// returns the function that restores the page size.
func SetExportPageForTest(n int32) (restore func()) {
	old := exportPage
	exportPage = n
	return func() { exportPage = old }
}
