// Package pgcluster starts and stops a private PostgreSQL cluster for development
// and tests. It is the one place that knows how to find, install and run
// PostgreSQL on a developer's machine; `make run` (through cmd/devpg) and the
// test harness (internal/testdb) both use it.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Options tune a cluster.
type Options struct {
	// Dir holds the data directory (Dir/data) and the server's log (Dir/postgres.log).
	Dir string
	// Fast trades durability for speed (fsync off): for throwaway test clusters only.
	Fast bool
	// Log receives progress lines; nil discards them.
	Log *slog.Logger
}

// Cluster is a running private PostgreSQL server reachable over a Unix socket.
type Cluster struct {
	dir     string // Options.Dir, absolute
	bin     string // directory of initdb, pg_ctl, postgres
	dataDir string
	sockDir string
	logFile string
	runAs   string // "postgres" when we are root (initdb refuses root), else ""
	log     *slog.Logger
}

// Start initialises the cluster if Dir/data is empty, starts it, and waits until
// it accepts connections. A cluster left running by an earlier crash is reused.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bin, err := findBinaries(ctx, log)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: resolve %s: %w", opts.Dir, err)
	}
	c := &Cluster{
		dir:     dir,
		bin:     bin,
		dataDir: filepath.Join(dir, "data"),
		sockDir: dir,
		logFile: filepath.Join(dir, "postgres.log"),
		log:     log,
	}
	// A Unix socket path may not exceed ~107 bytes; fall back to a short temp dir.
	if len(filepath.Join(c.sockDir, ".s.PGSQL.5432")) > 100 {
		if c.sockDir, err = os.MkdirTemp("", "kmpg"); err != nil {
			return nil, fmt.Errorf("pgcluster: socket dir: %w", err)
		}
	}
	if os.Geteuid() == 0 {
		c.runAs = "postgres"
	}
	if err := c.prepareDirs(dir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		log.Info("initialising PostgreSQL cluster", "dir", c.dataDir)
		if err := c.run(ctx, "initdb", "-D", c.dataDir, "-U", "postgres", "--auth=trust",
			"--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"); err != nil {
			return nil, err
		}
	}
	// Listen on the Unix socket only: no port to collide with, nothing exposed.
	pgOpts := []string{"-k", c.sockDir, "-c", "listen_addresses=", "-c", "max_connections=200"}
	if opts.Fast {
		pgOpts = append(pgOpts, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	if err := c.run(ctx, "pg_ctl", "status", "-D", c.dataDir); err == nil {
		log.Info("PostgreSQL already running", "dir", c.dataDir)
		return c, nil
	}
	log.Info("starting PostgreSQL", "dir", c.dataDir, "log", c.logFile)
	if err := c.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", c.dataDir, "-l", c.logFile,
		"-o", strings.Join(quoteAll(pgOpts), " ")); err != nil {
		return nil, fmt.Errorf("%w (see %s)", err, c.logFile)
	}
	return c, nil
}

// Dir is the cluster's directory (Options.Dir), for starting it again.
func (c *Cluster) Dir() string { return c.dir }

// URL returns a connection URL for database name.
func (c *Cluster) URL(name string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&sslmode=disable", name, c.sockDir)
}

// Stop shuts the cluster down ("fast": rolls back open transactions, then stops).
func (c *Cluster) Stop() error {
	c.log.Info("stopping PostgreSQL", "dir", c.dataDir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.run(ctx, "pg_ctl", "stop", "-w", "-m", "fast", "-D", c.dataDir)
}

func (c *Cluster) prepareDirs(dir string) error {
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("pgcluster: create %s: %w", c.dataDir, err)
	}
	if c.runAs == "" {
		return nil
	}
	u, err := user.Lookup(c.runAs)
	if err != nil {
		return fmt.Errorf("pgcluster: running as root needs the %q user (apt-get install -y postgresql creates it): %w", c.runAs, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, d := range []string{dir, c.dataDir, c.sockDir} {
		if err := os.Chown(d, uid, gid); err != nil {
			return fmt.Errorf("pgcluster: chown %s: %w", d, err)
		}
	}
	// The postgres user must be able to reach dir through its parents (temp dirs are 0700).
	for p := filepath.Dir(dir); p != "/" && p != "."; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("pgcluster: stat %s: %w", p, err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, fi.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("pgcluster: make %s traversable: %w", p, err)
			}
		}
	}
	return nil
}

// run runs one PostgreSQL program, as the postgres user when we are root.
func (c *Cluster) run(ctx context.Context, prog string, args ...string) error {
	path := filepath.Join(c.bin, prog)
	var cmd *exec.Cmd
	if c.runAs != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.runAs, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Dir = "/" // the postgres user may not be able to read our working directory
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgcluster: %s %s: %w: %s", prog, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// findBinaries locates the directory holding initdb and pg_ctl: PATH, then
// pg_config --bindir, then Debian's versioned folders. When none is found and
// we are root, it installs Debian's postgresql package.
func findBinaries(ctx context.Context, log *slog.Logger) (string, error) {
	if dir := lookBinaries(ctx); dir != "" {
		return dir, nil
	}
	if os.Geteuid() != 0 {
		return "", errors.New("pgcluster: PostgreSQL not found (no initdb on PATH, in pg_config --bindir or /usr/lib/postgresql/*/bin); " +
			"install it (Debian/Ubuntu: sudo apt-get install -y postgresql) or set DATABASE_URL")
	}
	log.Info("PostgreSQL not found; installing it with apt-get (a minute or two)")
	for _, args := range [][]string{{"update"}, {"install", "-y", "--no-install-recommends", "postgresql"}} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("pgcluster: apt-get %s: %w: %s", strings.Join(args, " "), err, lastLines(out, 5))
		}
	}
	if dir := lookBinaries(ctx); dir != "" {
		return dir, nil
	}
	return "", errors.New("pgcluster: installed postgresql but still found no initdb")
}

func lookBinaries(ctx context.Context) string {
	has := func(dir string) bool {
		_, err1 := os.Stat(filepath.Join(dir, "initdb"))
		_, err2 := os.Stat(filepath.Join(dir, "pg_ctl"))
		return err1 == nil && err2 == nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real)
		}
	}
	if out, err := exec.CommandContext(ctx, "pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); has(dir) {
			return dir
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d
		}
	}
	return ""
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " '\"=") {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			out[i] = a
		}
	}
	return out
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
