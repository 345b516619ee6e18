// Package testdb gives each test its own freshly migrated PostgreSQL database.
//
// It uses DATABASE_URL when set; otherwise it starts a throwaway cluster (once
// per test binary, stopped by Main). The schema is migrated once into a template
// database named by the hash of schema/*.sql, and every test clones it with
// CREATE DATABASE … TEMPLATE, which takes milliseconds. It never skips: a suite
// that skips without a database proves nothing.
package testdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/karlmalone/karlmalone/internal/pgcluster"
	"github.com/karlmalone/karlmalone/schema"
)

var (
	once      sync.Once
	cluster   *pgcluster.Cluster
	tmpDir    string
	adminURL  string // a URL whose database we may CREATE DATABASE from
	template  string
	onceError error
)

// Main runs the package's tests and then stops the cluster it started, if any.
// Call it from TestMain: func TestMain(m *testing.M) { testdb.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if cluster != nil {
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testdb:", err)
		}
		os.RemoveAll(tmpDir)
	}
	os.Exit(code)
}

// New returns a pool on a new database with the whole schema applied. The
// database is dropped when the test ends.
func New(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	url := NewURL(tb)
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		tb.Fatalf("testdb: connect: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// NewURL is New for callers that build their own pool (the server under test).
func NewURL(tb testing.TB) string {
	tb.Helper()
	once.Do(func() { onceError = setup() })
	if onceError != nil {
		tb.Fatalf("testdb: %v", onceError)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := "t_" + randomHex(8)
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		tb.Fatalf("testdb: connect admin: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, template)); err != nil {
		tb.Fatalf("testdb: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			tb.Errorf("testdb: connect admin for cleanup: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			tb.Errorf("testdb: drop %s: %v", name, err)
		}
	})
	return withDatabase(adminURL, name)
}

func setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	adminURL = os.Getenv("DATABASE_URL")
	if adminURL == "" {
		var err error
		if tmpDir, err = os.MkdirTemp("", "karlmalone-test-"); err != nil {
			return err
		}
		cluster, err = pgcluster.Start(ctx, pgcluster.Options{Dir: tmpDir, Fast: true})
		if err != nil {
			return err
		}
		adminURL = cluster.URL("postgres")
	}
	hash, err := schemaHash()
	if err != nil {
		return err
	}
	template = "tpl_" + hash
	return createTemplate(ctx)
}

// createTemplate migrates the template database once per schema version. A
// session-level advisory lock, held on this connection until it is unlocked,
// serialises test binaries sharing a server.
func createTemplate(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect %s: %w", redact(adminURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(72622026)"); err != nil {
		return err
	}
	defer conn.Exec(context.Background(), "SELECT pg_advisory_unlock(72622026)")
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", template).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	building := template + "_build"
	if _, err := conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", building)); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, withDatabase(adminURL, building))
	if err != nil {
		return err
	}
	err = schema.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	pool.Close()
	if err != nil {
		return err
	}
	// Rename only when complete, so a crashed build never passes for a template.
	_, err = conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", building, template))
	return err
}

func schemaHash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(schema.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(schema.FS(), path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

// withDatabase points a postgres:// URL at another database on the same server.
func withDatabase(rawURL, name string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(fmt.Sprintf("testdb: DATABASE_URL must be a postgres:// URL: %v", err))
	}
	u.Path = "/" + name
	return u.String()
}

// redact hides a password in a URL before it is printed.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
