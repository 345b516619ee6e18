package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
)

// runLogin: a login storm. -login-clients clients each log in, over and
// over, as members spread over -members, for -duration. Errors are counted by
// code; internal and unknown (HTTP 5xx) fail the run, resource_exhausted and
// unavailable are the server protecting itself and are reported.
func runLogin(ctx context.Context, c *config, cl *clients, st *setup, log *slog.Logger) (*result, error) {
	sctx, cancel := setupContext(ctx, c)
	defer cancel()
	ms, err := st.members(sctx, c.members, false)
	if err != nil {
		return nil, err
	}
	cancel()

	var (
		lat          Histogram
		errs         tally
		ok, okWindow atomic.Int64
		wg           sync.WaitGroup
	)
	start := time.Now()
	windowStart, end := start.Add(c.warmup), start.Add(c.duration)
	watch := newProcWatcher(ctx, c.serverPID, c.pgPID)
	stopProgress := progress(ctx, log, c.progress, func() []any {
		return []any{"logins", ok.Load(), "errors", errs.total(), "p99", fmtDur(lat.Quantile(0.99))}
	})
	password := passwordFor(c.seed)
	for g := range c.loginClients {
		wg.Go(func() {
			// No new login after the end; those in flight finish (cutting
			// them off would only make the server log cancellations).
			for k := g; ctx.Err() == nil && time.Now().Before(end); k += c.loginClients {
				m := ms[k%len(ms)]
				cctx, cancel := context.WithTimeout(ctx, c.rpcTimeout)
				t0 := time.Now()
				_, err := cl.rpc(m).member.Login(cctx, &v1.LoginRequest{Phone: m.phone, Password: password, DeviceName: "loadgen storm"})
				d := time.Since(t0)
				cancel()
				measured := !t0.Before(windowStart)
				if err != nil {
					if ctx.Err() != nil {
						return // interrupted: not an answer
					}
					errs.add(loginFailure(err), fmt.Errorf("login member %d: %w", m.idx, err))
					time.Sleep(10 * time.Millisecond) // no hot loop on a refusing server
					continue
				}
				ok.Add(1)
				if measured {
					okWindow.Add(1)
					lat.Record(d)
				}
			}
		})
	}
	wg.Wait()
	proc := watch.Stop()
	stopProgress()
	window := min(time.Since(windowStart), end.Sub(windowStart))

	res := &result{
		scenario: "login",
		params:   fmt.Sprintf("%d clients over %d members, %s", c.loginClients, len(ms), c.duration),
		ops:      fmtRate(okWindow.Load(), window), opsUnit: "logins",
		deliveries: "—",
		latency:    lat.Summary(), latencyOf: "Login RPC",
		delivered: "—",
		errors:    errs.String(),
		proc:      proc,
		notes:     []string{fmt.Sprintf("%d logins in all", ok.Load())},
	}
	fivexx := errs.get("5xx")
	res.examples = errs.examples
	res.failed = fivexx > 0
	return res, nil
}

// loginFailure sorts a failed login: the server shedding load
// (resource_exhausted, unavailable), failing (5xx: internal, unknown), or
// anything else by its code.
func loginFailure(err error) string {
	switch code := codeOf(err); code {
	case "resource_exhausted", "unavailable":
		return code
	case "internal", "unknown":
		return "5xx"
	default:
		return "other:" + code
	}
}
