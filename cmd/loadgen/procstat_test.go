package main

import (
	"os"
	"testing"
	"time"
)

func TestStatCPUTicks(t *testing.T) {
	t.Parallel()
	// The command name may hold spaces and parentheses: fields count from the last ')'.
	stat := []byte("4421 (karl (x) malone) S 4321 4421 4321 0 -1 4194560 9811 0 0 0 1234 567 0 0 20 0 9 0 6360 2229408 25000 18446744073709551615")
	got, err := statCPUTicks(stat)
	if err != nil || got != 1234+567 {
		t.Fatalf("statCPUTicks = %d, %v; want %d", got, err, 1234+567)
	}
	if _, err := statCPUTicks([]byte("4421 (x) S 1 2")); err == nil {
		t.Fatal("short stat: want an error")
	}
}

func TestStatusKiB(t *testing.T) {
	t.Parallel()
	status := []byte("Name:\tkarlmalone\nVmHWM:\t  471000 kB\nVmRSS:\t  459764 kB\nThreads:\t9\n")
	if v, err := statusKiB(status, "VmRSS:"); err != nil || v != 459764 {
		t.Fatalf("VmRSS = %d, %v", v, err)
	}
	if v, err := statusKiB(status, "VmHWM:"); err != nil || v != 471000 {
		t.Fatalf("VmHWM = %d, %v", v, err)
	}
	if _, err := statusKiB(status, "VmSwap:"); err == nil {
		t.Fatal("missing key: want an error")
	}
}

func TestReadProcSelf(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	a, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if a.rssKiB <= 0 || a.hostTotal <= 0 {
		t.Fatalf("implausible sample %+v", a)
	}
	b := a
	b.at = a.at.Add(2 * time.Second)
	b.cpuTicks = a.cpuTicks + 100 // one second of CPU in two seconds
	if p := cpuPercent(a, b); p != 50 {
		t.Fatalf("cpuPercent = %v, want 50", p)
	}
}
