package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDevpgRunsACommandAgainstAPrivateCluster is `make run`'s path: with no
// DATABASE_URL, devpg starts a cluster, creates the database, hands its URL
// to the command, passes on its exit code, and stops the cluster after.
func TestDevpgRunsACommandAgainstAPrivateCluster(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "devpg")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build devpg: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "pg")
	// The child proves the database is there by connecting to it with psql
	// when psql is installed, and exits 3 so we see the code passed on.
	child := `echo "url=$DATABASE_URL"; if command -v psql >/dev/null; then psql "$DATABASE_URL" -tAc 'select current_database()' || exit 9; fi; exit 3`
	cmd := exec.Command(bin, "-dir", dir, "-db", "devpg_test", "--", "sh", "-c", child)
	cmd.Env = withoutDatabaseURL(os.Environ())
	out, err := cmd.CombinedOutput()
	exit, _ := err.(*exec.ExitError)
	if exit == nil || exit.ExitCode() != 3 {
		t.Fatalf("devpg exited with %v, want the child's 3\n%s", err, out)
	}
	if !strings.Contains(string(out), "url=postgres://") || !strings.Contains(string(out), "/devpg_test?") {
		t.Fatalf("the child did not get a DATABASE_URL for devpg_test:\n%s", out)
	}
	if !strings.Contains(string(out), "stopping PostgreSQL") {
		t.Fatalf("devpg did not stop the cluster:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("postmaster.pid still there after devpg exited (err %v)", err)
	}
}

func withoutDatabaseURL(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "DATABASE_URL=") {
			out = append(out, kv)
		}
	}
	return out
}
