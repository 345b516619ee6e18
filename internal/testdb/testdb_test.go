package testdb_test

import (
	"testing"

	"github.com/karlmalone/karlmalone/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// TestNewGivesMigratedIsolatedDatabases checks that every test gets the schema
// and that a row written in one database is not seen in another.
func TestNewGivesMigratedIsolatedDatabases(t *testing.T) {
	a, b := testdb.New(t), testdb.New(t)
	if _, err := a.Exec(t.Context(), `INSERT INTO members (phone, password_hash, nickname) VALUES ('+15550000001', 'x', 'a')`); err != nil {
		t.Fatalf("insert into a: %v", err)
	}
	var n int
	if err := b.QueryRow(t.Context(), `SELECT count(*) FROM members`).Scan(&n); err != nil {
		t.Fatalf("count in b: %v", err)
	}
	if n != 0 {
		t.Fatalf("database b sees %d members written to a; want 0", n)
	}
}
