package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// result is one scenario's row of the final table.
type result struct {
	scenario string
	params   string
	// ops are the scenario's unit of work per second over the measured
	// window: messages sent (direct, group), logins (login), socket
	// handshakes during the ramp (idle).
	ops, opsUnit string
	deliveries   string // deliveries/s over the measured window
	latency      Summary
	latencyOf    string // what the latency columns measure
	delivered    string // delivered/expected (held/target for idle)
	errors       string
	efficiency   string // CPU per unit of work (chat scenarios)
	proc         procReport
	notes        []string
	examples     []string // missing, duplicate or failure examples, printed under the table
	failed       bool     // the run found lost messages, 5xx or failed sockets
}

// tally counts errors by kind, with a few examples.
type tally struct {
	mu       sync.Mutex
	counts   map[string]int64
	examples []string
}

func (t *tally) add(kind string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts == nil {
		t.counts = map[string]int64{}
	}
	t.counts[kind]++
	if len(t.examples) < 3 && err != nil {
		t.examples = append(t.examples, kind+": "+err.Error())
	}
}

func (t *tally) total() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for _, c := range t.counts {
		n += c
	}
	return n
}

// String is "0", or "12 (unavailable 10, internal 2)".
func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int64
	for _, c := range t.counts {
		n += c
	}
	if n == 0 {
		return "0"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(t.counts)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, t.counts[k]))
	}
	return fmt.Sprintf("%d (%s)", n, strings.Join(parts, ", "))
}

func (t *tally) get(kind string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.counts[kind]
}

// fmtDur prints a latency with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func fmtMiB(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }

func fmtRate(n int64, window time.Duration) string {
	if window <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f", float64(n)/window.Seconds())
}

const tableHeader = "| scenario | parameters | ops/s | deliveries/s | latency of | p50 | p90 | p99 | p99.9 | max | delivered/expected | errors | server RSS start→end (peak) | CPU server / PostgreSQL / loadgen / host | CPU per unit of work | notes |\n" +
	"|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|---|---|\n"

// writeTable prints rows as a Markdown table, then the examples.
func writeTable(w io.Writer, header bool, rows []*result) {
	if header {
		io.WriteString(w, tableHeader)
	}
	for _, r := range rows {
		rss, server, pg := "—", "—", "—"
		if r.proc.HaveServer {
			rss = fmt.Sprintf("%s→%s (%s)", fmtMiB(r.proc.RSSStartKiB), fmtMiB(r.proc.RSSEndKiB), fmtMiB(r.proc.RSSPeakKiB))
			server = fmt.Sprintf("%.0f%%", r.proc.ServerCPU)
		}
		if r.proc.PGCPU >= 0 {
			pg = fmt.Sprintf("%.0f%%", r.proc.PGCPU)
		}
		cpu := fmt.Sprintf("%s / %s / %.0f%% / %.0f%%", server, pg, r.proc.SelfCPU, r.proc.HostCPU)
		l := r.latency
		lat := []string{"—", "—", "—", "—", "—"}
		if l.Count > 0 {
			lat = []string{fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max)}
		}
		ops := r.ops
		if r.opsUnit != "" {
			ops += " " + r.opsUnit
		}
		notes := r.notes
		if r.proc.SelfPeakKiB > 0 {
			notes = append(notes[:len(notes):len(notes)], "loadgen peak RSS "+fmtMiB(r.proc.SelfPeakKiB))
		}
		eff := r.efficiency
		if eff == "" {
			eff = "—"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.scenario, r.params, ops, r.deliveries, r.latencyOf, lat[0], lat[1], lat[2], lat[3], lat[4],
			r.delivered, r.errors, rss, cpu, eff, strings.Join(notes, "; "))
	}
	for _, r := range rows {
		for _, e := range r.examples {
			fmt.Fprintf(w, "\n- %s: %s", r.scenario, e)
		}
	}
	if slices.ContainsFunc(rows, func(r *result) bool { return len(r.examples) > 0 }) {
		io.WriteString(w, "\n")
	}
}

// efficiency is CPU time per unit of work over the watched period, the
// yardstick that a busy, shared machine leaves comparable between runs:
// server and PostgreSQL per stored message, server and load generator per
// delivery received. Units of work are counted over the same period as the
// CPU. Parts not watched (no -server-pid, -pg-pid) are left out.
func efficiency(p procReport, stored, deliveries int64) string {
	per := func(sec float64, n int64) string {
		if sec < 0 || n <= 0 {
			return "—"
		}
		us := sec * 1e6 / float64(n)
		if us < 10 {
			return fmt.Sprintf("%.2f", us)
		}
		return fmt.Sprintf("%.0f", us)
	}
	return fmt.Sprintf("per message: server %s + PostgreSQL %s µs; per delivery: server %s, loadgen %s µs",
		per(p.ServerSec, stored), per(p.PGSec, stored), per(p.ServerSec, deliveries), per(p.SelfSec, deliveries))
}
