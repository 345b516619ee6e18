//go:build unix

// Command cluster runs a KarlMalone cluster on this machine, for development
// (`make cluster`, docs/CLUSTER.md): one nats-server and several karlmalone
// nodes on one database.
//
//	devpg -dir .data/cluster/postgres -db karlmalone -- cluster [flags] [-- node flags]
//
// It migrates the database once, starts bin/nats-server, then node i
// listening on 127.0.0.1:port+i (5288, 5289, 5290 by default) with
// -nats-url, -node-name node-i and one attachment directory shared by all
// (they share this machine's disk; nodes on several machines use -s3-endpoint).
// Flags after "--" go to every node. Every line a process logs is prefixed
// with its name. Ctrl-C or SIGTERM stops the nodes (draining their sockets),
// then NATS. A process that dies is reported and not restarted; the others go
// on, so killing a node shows what its clients see.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

func run() error {
	nodes := flag.Int("nodes", 3, "how many karlmalone nodes")
	port := flag.Int("port", 5288, "the first node's port; node i listens on port+i")
	natsPort := flag.Int("nats-port", 4222, "nats-server's client port")
	dir := flag.String("dir", ".data/cluster", "where the nodes keep attachments")
	bin := flag.String("bin", "bin", "directory holding karlmalone and nats-server")
	flag.Parse()
	if os.Getenv("DATABASE_URL") == "" {
		return errors.New("DATABASE_URL is not set: run me under devpg (make cluster)")
	}
	// The children get their own process group: Ctrl-C reaches this process
	// only, which stops them in order (nodes first, so they leave NATS cleanly).
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)

	karlmalone := filepath.Join(*bin, "karlmalone")
	migrate := exec.Command(karlmalone, "migrate")
	migrate.Stdout, migrate.Stderr = prefixed("migrate"), prefixed("migrate")
	if err := migrate.Run(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}

	var g group
	defer g.stopAll()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", *natsPort)
	if err := g.start("nats", filepath.Join(*bin, "nats-server"), "-a", "127.0.0.1", "-p", strconv.Itoa(*natsPort), "-n", "karlmalone-dev"); err != nil {
		return err
	}
	if err := waitTCP(natsAddr, 10*time.Second); err != nil {
		return fmt.Errorf("nats-server: %w", err)
	}
	var urls []string
	for i := range *nodes {
		name := fmt.Sprintf("node-%d", i+1)
		addr := fmt.Sprintf("127.0.0.1:%d", *port+i)
		args := append([]string{"serve", "-listen", addr, "-nats-url", "nats://" + natsAddr, "-node-name", name,
			"-attachment-dir", filepath.Join(*dir, "attachments")}, flag.Args()...)
		if err := g.start(name, karlmalone, args...); err != nil {
			return err
		}
		urls = append(urls, "http://"+addr)
	}
	for _, u := range urls {
		if err := waitReady(u+"/readyz", 30*time.Second); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "cluster: %d nodes ready at %v, NATS at nats://%s; Ctrl-C stops them\n", *nodes, urls, natsAddr)
	select {
	case <-signals:
	case name := <-g.exited:
		// One process gone is worth a look, not a reason to stop the others.
		fmt.Fprintf(os.Stderr, "cluster: %s exited; the others keep running\n", name)
		<-signals
	}
	fmt.Fprintln(os.Stderr, "cluster: stopping")
	return nil
}

// group is the child processes, stopped in reverse order of start.
type group struct {
	mu     sync.Mutex
	procs  []*proc
	exited chan string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (g *group) start(name, path string, args ...string) error {
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = prefixed(name), prefixed(name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	g.mu.Lock()
	if g.exited == nil {
		g.exited = make(chan string, 16)
	}
	g.procs = append(g.procs, p)
	exited := g.exited
	g.mu.Unlock()
	go func() {
		err := cmd.Wait()
		close(p.done)
		fmt.Fprintf(os.Stderr, "cluster: %s exited: %v\n", name, errOrOK(err))
		exited <- name
	}()
	return nil
}

func errOrOK(err error) any {
	if err == nil {
		return "ok"
	}
	return err
}

// stopAll sends SIGTERM to the nodes (in parallel), waits for them, then
// stops NATS; whatever does not stop in 30 s is killed.
func (g *group) stopAll() {
	g.mu.Lock()
	procs := g.procs
	g.mu.Unlock()
	stop(procs[min(1, len(procs)):]) // the nodes
	if len(procs) > 0 {
		stop(procs[:1]) // nats
	}
}

func stop(procs []*proc) {
	for _, p := range procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(30 * time.Second)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// prefixed writes each line to stderr with the process's name in front.
func prefixed(name string) io.Writer {
	r, w := io.Pipe()
	go func() {
		s := bufio.NewScanner(r)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			fmt.Fprintf(os.Stderr, "%-7s | %s\n", name, s.Bytes())
		}
		io.Copy(io.Discard, r)
	}()
	return w
}

func waitTCP(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %v: %w", addr, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitReady(url string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v", url, d)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
