package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

// procSample is one reading of a process's memory and CPU time, and of the
// machine's CPU counters.
type procSample struct {
	at       time.Time
	rssKiB   int64 // VmRSS
	hwmKiB   int64 // VmHWM: the process's lifetime peak RSS
	cpuTicks int64 // utime + stime
	// Machine-wide, from /proc/stat: busy and total jiffies over all CPUs.
	hostBusy, hostTotal int64
}

// readProc reads /proc/<pid>/status and /proc/<pid>/stat.
func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read status of pid %d: %w", pid, err)
	}
	if s.rssKiB, err = statusKiB(status, "VmRSS:"); err != nil {
		return s, fmt.Errorf("pid %d: %w", pid, err)
	}
	if s.hwmKiB, err = statusKiB(status, "VmHWM:"); err != nil {
		return s, fmt.Errorf("pid %d: %w", pid, err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	if s.cpuTicks, err = statCPUTicks(stat); err != nil {
		return s, fmt.Errorf("pid %d: %w", pid, err)
	}
	s.hostBusy, s.hostTotal, _ = readHostCPU() // best effort
	return s, nil
}

// statusKiB finds a "Key:   1234 kB" line of /proc/<pid>/status.
func statusKiB(status []byte, key string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in status", key)
}

// statCPUTicks returns utime+stime (fields 14 and 15) of /proc/<pid>/stat.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func statCPUTicks(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse stat: %w", err)
	}
	return u + s, nil
}

// readHostCPU returns busy and total jiffies of all CPUs from /proc/stat.
func readHostCPU() (busy, total int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, errors.New("malformed /proc/stat")
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse /proc/stat: %w", err)
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

// treeCPUTicks sums utime+stime of pid and its direct children (the
// PostgreSQL postmaster and its backends), scanning /proc. A child that
// exited between two readings takes its ticks with it, so this slightly
// undercounts short-lived backends; the server's pool keeps its own.
func treeCPUTicks(pid int) (int64, error) {
	own, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	total, err := statCPUTicks(own)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("list /proc: %w", err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		if ppid, err := statPPID(b); err != nil || ppid != pid {
			continue
		}
		if t, err := statCPUTicks(b); err == nil {
			total += t
		}
	}
	return total, nil
}

// statPPID returns field 4 of /proc/<pid>/stat.
func statPPID(stat []byte) (int, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return 0, errors.New("short stat")
	}
	return strconv.Atoi(f[1])
}

// cpuPercent is the CPU a process used between two samples, in percent of
// one core (200% = two cores busy).
func cpuPercent(a, b procSample) float64 {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return 0
	}
	return float64(b.cpuTicks-a.cpuTicks) / clockTicks / wall * 100
}

// hostPercent is the machine's busy share between two samples, in percent
// of all its cores.
func hostPercent(a, b procSample) float64 {
	if b.hostTotal <= a.hostTotal {
		return 0
	}
	return float64(b.hostBusy-a.hostBusy) / float64(b.hostTotal-a.hostTotal) * 100
}

// procWatcher samples a process (the server) every second between start and
// stop, keeping the peak RSS seen; it also samples this process, for the
// load generator's own CPU. A zero pid watches only this process.
type procWatcher struct {
	pid   int
	pgPID int // PostgreSQL postmaster, 0 if not watched

	pg0   int64 // postmaster tree CPU ticks at start
	pg0At time.Time

	mu            sync.Mutex
	first, last   procSample
	self0         procSample
	peakRSSKiB    int64
	err           error
	stop          context.CancelFunc
	done          chan struct{}
	startedServer bool
}

// newProcWatcher takes the first sample and starts the sampler.
func newProcWatcher(ctx context.Context, pid, pgPID int) *procWatcher {
	w := &procWatcher{pid: pid, pgPID: pgPID, done: make(chan struct{})}
	w.self0, _ = readProc(os.Getpid())
	if pgPID > 0 {
		t, err := treeCPUTicks(pgPID)
		if err != nil {
			w.err, w.pgPID = err, 0
		}
		w.pg0, w.pg0At = t, time.Now()
	}
	if pid > 0 {
		s, err := readProc(pid)
		if err != nil {
			w.err = err
		} else {
			w.first, w.last, w.peakRSSKiB, w.startedServer = s, s, s.rssKiB, true
		}
	}
	ctx, w.stop = context.WithCancel(ctx)
	go func() {
		defer close(w.done)
		if !w.startedServer {
			return
		}
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.sample()
			}
		}
	}()
	return w
}

func (w *procWatcher) sample() {
	s, err := readProc(w.pid)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.err = err
		return
	}
	w.last = s
	w.peakRSSKiB = max(w.peakRSSKiB, s.rssKiB)
}

// RSSKiB samples the server's RSS now (0 without a server pid).
func (w *procWatcher) RSSKiB() int64 {
	if !w.startedServer {
		return 0
	}
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last.rssKiB
}

// procReport is what a report shows of the server and the machine.
type procReport struct {
	HaveServer                  bool
	RSSStartKiB, RSSEndKiB      int64
	RSSPeakKiB                  int64
	ServerCPU, SelfCPU, HostCPU float64 // percent of one core; host: percent of all cores
	PGCPU                       float64 // PostgreSQL (postmaster and backends), percent of one core; -1 if not watched
	SelfPeakKiB                 int64   // the load generator's own peak RSS (VmHWM)
	// CPU time over the watched period, in seconds: the yardstick of the
	// efficiency columns. -1 when not watched.
	ServerSec, PGSec, SelfSec float64
	Err                       error
}

// Stop takes the last samples and returns the report.
func (w *procWatcher) Stop() procReport {
	w.stop()
	<-w.done
	self1, _ := readProc(os.Getpid())
	if w.startedServer {
		w.sample()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := procReport{
		HaveServer: w.startedServer, Err: w.err,
		SelfCPU: cpuPercent(w.self0, self1), HostCPU: hostPercent(w.self0, self1), SelfPeakKiB: self1.hwmKiB,
	}
	r.SelfSec = float64(self1.cpuTicks-w.self0.cpuTicks) / clockTicks
	r.PGCPU, r.PGSec, r.ServerSec = -1, -1, -1
	if w.pgPID > 0 {
		if t, err := treeCPUTicks(w.pgPID); err == nil {
			r.PGSec = float64(t-w.pg0) / clockTicks
			r.PGCPU = r.PGSec / time.Since(w.pg0At).Seconds() * 100
		}
	}
	if w.startedServer {
		r.RSSStartKiB, r.RSSEndKiB, r.RSSPeakKiB = w.first.rssKiB, w.last.rssKiB, w.peakRSSKiB
		r.ServerCPU = cpuPercent(w.first, w.last)
		r.ServerSec = float64(w.last.cpuTicks-w.first.cpuTicks) / clockTicks
	}
	return r
}

// hostBusy samples the machine's busy share (percent of all cores) over d.
func hostBusy(ctx context.Context, d time.Duration) float64 {
	b0, t0, err := readHostCPU()
	if err != nil {
		return 0
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	b1, t1, err := readHostCPU()
	if err != nil || t1 <= t0 {
		return 0
	}
	return float64(b1-b0) / float64(t1-t0) * 100
}
