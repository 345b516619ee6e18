// Command devpg runs a command against a private PostgreSQL cluster, for
// `make run` and local development:
//
//	devpg -dir .data/postgres -db karlmalone -- karlmalone serve
//
// It starts (initialising and, as root, installing PostgreSQL if needed) a
// cluster under -dir, creates the database, runs the command with
// DATABASE_URL set, forwards SIGINT/SIGTERM to it, and stops the cluster when
// the command exits. When DATABASE_URL is already set it just runs the command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/jackc/pgx/v5"

	"github.com/karlmalone/karlmalone/internal/pgcluster"
)

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devpg:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run() (int, error) {
	dir := flag.String("dir", ".data/postgres", "cluster directory")
	dbName := flag.String("db", "karlmalone", "database to create and pass in DATABASE_URL")
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		return 2, errors.New("usage: devpg [-dir DIR] [-db NAME] -- command [args...]")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "devpg")
	// Signals go to the child; we wait for it and then stop the cluster.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)

	if os.Getenv("DATABASE_URL") != "" {
		log.Info("DATABASE_URL is set; not starting a private PostgreSQL")
		return runChild(args, os.Environ(), signals)
	}
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: *dir, Log: log})
	if err != nil {
		return 1, err
	}
	defer func() {
		if err := c.Stop(); err != nil {
			log.Error("stop PostgreSQL", "err", err)
		}
	}()
	if err := createDatabase(ctx, c.URL("postgres"), *dbName); err != nil {
		return 1, err
	}
	url := c.URL(*dbName)
	log.Info("PostgreSQL ready", "url", url)
	return runChild(args, append(os.Environ(), "DATABASE_URL="+url), signals)
}

func createDatabase(ctx context.Context, adminURL, name string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

func runChild(args, env []string, signals <-chan os.Signal) (int, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return 1, fmt.Errorf("start %s: %w", args[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-signals:
			cmd.Process.Signal(sig)
		case err := <-done:
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return exit.ExitCode(), nil
			}
			return 0, err
		}
	}
}
