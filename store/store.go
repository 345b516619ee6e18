// Package store is the one door to PostgreSQL. The handlers in server/ run the
// sqlc-generated queries (gen/db) through it, and what comes back speaks the
// program's words: a missing row is ErrNotFound, a unique violation is a named
// error such as ErrPhoneTaken, and every other database failure is an *Error
// of a Kind (invalid, unavailable, retry…) that server.toConnectError turns
// into a Connect code. Nothing outside this package names pgx's errors,
// pgconn or an SQLSTATE.
//
// The shape follows Ben Johnson's standard package layout (wtf): the package
// that adapts a dependency is the only one that knows it, and translates its
// failures into the domain's vocabulary at the boundary, as wtf's sqlite
// package does for database/sql. The boundary is the queries' connection
// itself (see dbtx.go): every statement's error is translated on its way out,
// inside a transaction or not, so no handler can forget to. The package is
// named for what it holds (DESIGN: small packages named for what they hold):
// the queries, the transaction, the error table and the numbers stored for
// enums (enums.go).
//
// See docs/ARCHITECTURE.md for where this sits on the way of a message.
package store

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/karlmalone/karlmalone/gen/db"
)

// Store is the database: the pool and the generated queries over it.
type Store struct {
	pool   *pgxpool.Pool
	q      *db.Queries
	custom *db.Queries
}

// New returns the store over pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, q: db.New(dbtx{pool}), custom: db.New(customPlans{dbtx{pool}})}
}

// Queries runs each query as its own statement (its own implicit
// transaction). Its errors are translated (see Error).
func (s *Store) Queries() *db.Queries { return s.q }

// CustomPlans is Queries for statements whose best plan depends on their
// arguments so much that PostgreSQL's generic plan for a prepared statement
// (which it switches to after five runs) would be a disaster: full-text
// search, where a common word wants a walk down the newest messages and a
// rare one the GIN index. Each query is planned for its arguments, every
// time (an unnamed statement, pgx.QueryExecModeExec), at the cost of
// planning it each time.
func (s *Store) CustomPlans() *db.Queries { return s.custom }

// customPlans runs each query as an unnamed statement, planned for its arguments.
type customPlans struct{ dbtx }

func (d customPlans) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return d.dbtx.Query(ctx, sql, append([]any{pgx.QueryExecModeExec}, args...)...)
}

func (d customPlans) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return d.dbtx.QueryRow(ctx, sql, append([]any{pgx.QueryExecModeExec}, args...)...)
}

// InTx runs fn in one transaction: all of it lands or none of it does. The
// queries fn gets translate their errors as Queries' do; so does InTx for
// the begin and the commit.
func (s *Store) InTx(ctx context.Context, fn func(q *db.Queries) error) error {
	return translate(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return fn(db.New(dbtx{tx}))
	}))
}

// Ping reports whether the database answers, within ctx.
func (s *Store) Ping(ctx context.Context) error { return translate(s.pool.Ping(ctx)) }

// LikePrefix is a LIKE pattern matching strings that start with s: LIKE's
// wildcards and escape character in s match themselves.
func LikePrefix(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s) + "%"
}

// Batch runs the batched queries fn queues (sqlc's :batch… methods) as one
// pipelined round trip in one implicit transaction, and returns the error of
// that transaction's COMMIT. The generated code closes the batch itself and
// drops that error, so without Batch a commit that fails (a deferred
// constraint, a connection cut after the last row) would look like success.
// Nothing fn's queries returned is stored unless Batch returns nil.
func (s *Store) Batch(fn func(q *db.Queries)) error {
	c := &commitChecked{dbtx: dbtx{s.pool}}
	fn(db.New(c))
	return c.closeErr
}

// commitChecked is a connection whose batches keep the error of closing
// their results, which is where an implicit transaction reports its COMMIT.
type commitChecked struct {
	dbtx
	closeErr error
}

func (c *commitChecked) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return &checkedResults{BatchResults: c.dbtx.SendBatch(ctx, b), c: c}
}

type checkedResults struct {
	pgx.BatchResults
	c *commitChecked
}

func (r *checkedResults) Close() error {
	err := r.BatchResults.Close()
	if err != nil && r.c.closeErr == nil {
		r.c.closeErr = err
	}
	return err
}
