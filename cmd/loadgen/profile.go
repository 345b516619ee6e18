package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"
)

// profiler captures CPU profiles of one load period, when -profile-dir is
// set: the load generator's own (runtime/pprof) and, with -server-debug, the
// server's (GET /debug/pprof/profile of a server run with -debug-listen).
// Setup and the drain are left out, so the profiles show the steady state
// the rates describe.
type profiler struct {
	dir, name string
	log       *slog.Logger

	self    *os.File
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	errs    []error
	errsMu  sync.Mutex
	written []string
}

// startProfiles starts both profiles for a load that lasts d; stop ends them.
// Without -profile-dir it does nothing.
func startProfiles(ctx context.Context, c *config, d time.Duration, log *slog.Logger) *profiler {
	p := &profiler{dir: c.profileDir, log: log}
	if c.profileDir == "" {
		return p
	}
	p.name = profileName(c)
	if err := os.MkdirAll(c.profileDir, 0o755); err != nil {
		p.fail(err)
		return p
	}
	f, err := os.Create(filepath.Join(c.profileDir, p.name+"-loadgen.pprof"))
	if err != nil {
		p.fail(err)
	} else if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		p.fail(err)
	} else {
		p.self = f
	}
	if c.serverDebug != "" {
		ctx, p.cancel = context.WithCancel(ctx)
		secs := max(int(d.Round(time.Second)/time.Second), 1)
		p.wg.Go(func() { p.fetch(ctx, c.serverDebug, secs) })
	}
	return p
}

// profileName is <scenario>-<the parameter that varies>: direct-r1000,
// group-g1000-r50, …
func profileName(c *config) string {
	switch c.scenario {
	case "direct":
		return fmt.Sprintf("direct-p%d-r%g", c.pairs, c.rate)
	case "group":
		return fmt.Sprintf("group-g%d-r%g", c.groupSize, c.rate)
	default:
		return c.scenario
	}
}

func (p *profiler) fetch(ctx context.Context, addr string, secs int) {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimRight(base, "/"), secs), nil)
	if err != nil {
		p.fail(err)
		return
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.fail(fmt.Errorf("server profile: %w", err))
		return
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		p.fail(fmt.Errorf("server profile: %s", res.Status))
		return
	}
	path := filepath.Join(p.dir, p.name+"-server.pprof")
	f, err := os.Create(path)
	if err != nil {
		p.fail(err)
		return
	}
	_, err = io.Copy(f, res.Body)
	if err = errors.Join(err, f.Close()); err != nil {
		p.fail(fmt.Errorf("server profile: %w", err))
		return
	}
	p.errsMu.Lock()
	p.written = append(p.written, path)
	p.errsMu.Unlock()
}

func (p *profiler) fail(err error) {
	p.errsMu.Lock()
	defer p.errsMu.Unlock()
	p.errs = append(p.errs, err)
}

// stop ends the load generator's profile at once and waits for the
// server's, which ends by itself after the load's duration.
func (p *profiler) stop() {
	if p.dir == "" {
		return
	}
	if p.self != nil {
		pprof.StopCPUProfile()
		if err := p.self.Close(); err != nil {
			p.fail(err)
		} else {
			p.written = append(p.written, p.self.Name())
		}
		p.self = nil
	}
	p.wg.Wait()
	if p.cancel != nil {
		p.cancel()
	}
	if len(p.errs) > 0 {
		p.log.Warn("profiles incomplete", "err", errors.Join(p.errs...))
	}
	p.log.Info("profiles written", "files", p.written)
}
