package store

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/karlmalone/karlmalone/gen/db"
)

// dbtx is the connection the generated queries run on (a pool or a
// transaction), with every error translated on its way out: the boundary
// where pgx's errors become the store's.
type dbtx struct{ db.DBTX }

var _ db.DBTX = dbtx{}

func (d dbtx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	tag, err := d.DBTX.Exec(ctx, sql, args...)
	return tag, translate(err)
}

func (d dbtx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := d.DBTX.Query(ctx, sql, args...)
	if err != nil {
		return rows, translate(err)
	}
	return translatedRows{rows}, nil
}

func (d dbtx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return translatedRow{d.DBTX.QueryRow(ctx, sql, args...)}
}

func (d dbtx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return translatedBatch{d.DBTX.SendBatch(ctx, b)}
}

type translatedRow struct{ pgx.Row }

func (r translatedRow) Scan(dest ...any) error { return translate(r.Row.Scan(dest...)) }

type translatedRows struct{ pgx.Rows }

func (r translatedRows) Scan(dest ...any) error { return translate(r.Rows.Scan(dest...)) }
func (r translatedRows) Err() error             { return translate(r.Rows.Err()) }

type translatedBatch struct{ pgx.BatchResults }

func (b translatedBatch) Exec() (pgconn.CommandTag, error) {
	tag, err := b.BatchResults.Exec()
	return tag, translate(err)
}

func (b translatedBatch) Query() (pgx.Rows, error) {
	rows, err := b.BatchResults.Query()
	if err != nil {
		return rows, translate(err)
	}
	return translatedRows{rows}, nil
}

func (b translatedBatch) QueryRow() pgx.Row { return translatedRow{b.BatchResults.QueryRow()} }
func (b translatedBatch) Close() error      { return translate(b.BatchResults.Close()) }
