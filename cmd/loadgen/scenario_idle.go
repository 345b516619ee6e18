package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// idleSocket is one held socket.
type idleSocket struct {
	ws      *websocket.Conn
	closing atomic.Bool
	pings   atomic.Int64
	done    chan struct{}
}

// runIdle opens -sockets sockets over min(-members, -sockets) sessions,
// holds them for -duration and reports what the server paid for them.
//
// Each socket has a pending Read for its whole life (a read loop, not
// CloseRead, so a drop's close code can be reported): coder/websocket
// answers the server's pings only while a Read is pending.
func runIdle(ctx context.Context, c *config, cl *clients, st *setup, log *slog.Logger) (*result, error) {
	n := min(c.members, c.sockets)
	sctx, cancel := setupContext(ctx, c)
	defer cancel()
	ms, err := st.members(sctx, n, true)
	if err != nil {
		return nil, err
	}
	if c.logout {
		defer st.logout(context.WithoutCancel(ctx), ms)
	}

	watch := newProcWatcher(ctx, c.serverPID, c.pgPID)
	time.Sleep(time.Second) // let the login burst's garbage settle before the baseline
	rssBefore := watch.RSSKiB()

	var (
		handshake      Histogram
		failures       tally
		opened, events atomic.Int64
		dropped, pings atomic.Int64
		reasonsMu      sync.Mutex
		reasons        = map[string]int{}
	)
	sockets := make([]*idleSocket, c.sockets)
	holdCtx, stopHolding := context.WithCancel(context.Background())
	defer stopHolding()
	stopProgress := progress(ctx, log, c.progress, func() []any {
		return []any{"opened", opened.Load(), "failed", failures.total(), "dropped", dropped.Load(),
			"pings_answered", pings.Load(), "server_rss_mib", watch.RSSKiB() / 1024}
	})
	defer stopProgress()

	// Ramp: open every socket. A failure is counted, not fatal, unless
	// failures pile up (then the server or the machine is at its limit).
	maxFailures := int64(max(100, c.sockets/10))
	rampStart := time.Now()
	err = forEach(sctx, c.sockets, c.setupConcurrency, func(ctx context.Context, i int) error {
		dctx, cancel := context.WithTimeout(ctx, c.rpcTimeout)
		defer cancel()
		t0 := time.Now()
		s := &idleSocket{done: make(chan struct{})}
		ws, err := cl.dialPush(dctx, i, ms[i%n].token, func() { pings.Add(1); s.pings.Add(1) })
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failures.add(dialFailure(err), err)
			if failures.total() > maxFailures {
				return fmt.Errorf("more than %d sockets failed to open; last: %w", maxFailures, err)
			}
			return nil
		}
		handshake.Record(time.Since(t0))
		s.ws = ws
		sockets[i] = s
		opened.Add(1)
		go func() {
			defer close(s.done)
			for {
				if _, _, err := ws.Read(holdCtx); err != nil {
					if !s.closing.Load() && holdCtx.Err() == nil {
						dropped.Add(1)
						reasonsMu.Lock()
						reasons[closeReason(err)]++
						reasonsMu.Unlock()
					}
					return
				}
				events.Add(1)
			}
		}()
		return nil
	})
	ramp := time.Since(rampStart)
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("ramp stopped", "err", err)
	}
	log.Info("load: sockets open", "opened", opened.Load(), "failed", failures.total(), "ramp", ramp.Round(time.Millisecond))

	// Let the server's allocations settle, then take the per-socket cost.
	sleepCtx(ctx, 2*time.Second)
	rssAfter := watch.RSSKiB()
	perSocket := 0.0
	if o := opened.Load(); o > 0 && rssBefore > 0 {
		perSocket = float64(rssAfter-rssBefore) / float64(o)
	}
	log.Info("load: holding", "sockets", opened.Load(), "for", c.duration, "server_rss_before_mib", rssBefore/1024,
		"server_rss_after_mib", rssAfter/1024, "server_rss_per_socket_kib", fmt.Sprintf("%.1f", perSocket))
	sleepCtx(ctx, c.duration)
	held := opened.Load() - dropped.Load()
	var pinged int64 // sockets that answered at least one ping
	for _, s := range sockets {
		if s != nil && s.pings.Load() > 0 {
			pinged++
		}
	}
	rssEnd := watch.RSSKiB() // after at least one ping round when -duration > the server's ping interval
	proc := watch.Stop()
	stopProgress()

	closeEach(sockets, func(s *idleSocket) {
		s.closing.Store(true)
		s.ws.Close(websocket.StatusNormalClosure, "load generator done")
		<-s.done
	})

	res := &result{
		scenario: "idle",
		params:   fmt.Sprintf("%d sockets over %d sessions, held %s", c.sockets, n, c.duration),
		ops:      fmtRate(opened.Load(), ramp), opsUnit: "handshakes",
		deliveries: "—",
		latency:    handshake.Summary(), latencyOf: "handshake",
		delivered: fmt.Sprintf("held %d/%d", held, c.sockets),
		proc:      proc,
	}
	errCount := failures.total() + dropped.Load()
	res.errors = fmt.Sprintf("%d", errCount)
	if errCount > 0 {
		res.errors = fmt.Sprintf("%d (open %s; dropped %d)", errCount, failures.String(), dropped.Load())
	}
	if rssBefore > 0 && held > 0 && rssAfter < rssBefore {
		res.notes = append(res.notes, fmt.Sprintf("server RSS fell from %s to %s during the ramp (memory of earlier load returned to the OS): per-socket cost not measurable at this size", fmtMiB(rssBefore), fmtMiB(rssAfter)))
	} else if rssBefore > 0 && held > 0 {
		res.notes = append(res.notes,
			fmt.Sprintf("server RSS %s before sockets → %s after the ramp: %.1f KiB/socket", fmtMiB(rssBefore), fmtMiB(rssAfter), perSocket),
			fmt.Sprintf("%s at the end of the hold: %.1f KiB/socket", fmtMiB(rssEnd), float64(rssEnd-rssBefore)/float64(held)))
	}
	res.notes = append(res.notes, fmt.Sprintf("ramp %s", ramp.Round(time.Millisecond)), fmt.Sprintf("pings answered %d, by %d sockets", pings.Load(), pinged))
	if e := events.Load(); e > 0 {
		res.notes = append(res.notes, fmt.Sprintf("events received %d", e))
	}
	for r, k := range reasons {
		res.examples = append(res.examples, fmt.Sprintf("%d sockets dropped: %s", k, r))
	}
	res.examples = append(res.examples, failures.examples...)
	res.failed = errCount > 0
	return res, nil
}

// dialFailure names the kind of a failed socket open: an HTTP status, or
// the system error behind a failed connection.
func dialFailure(err error) string {
	var errno syscall.Errno
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &errno):
		return strings.ReplaceAll(errno.Error(), " ", "_")
	}
	s := err.Error()
	if i := strings.Index(s, "HTTP "); i >= 0 {
		var code int
		if _, e := fmt.Sscanf(s[i:], "HTTP %d", &code); e == nil {
			return "http_" + strings.ReplaceAll(strings.ToLower(http.StatusText(code)), " ", "_")
		}
	}
	return "other"
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
