//go:build unix

package main

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// raiseFileLimit lifts RLIMIT_NOFILE as far as allowed: the soft limit to the
// hard one, and as root the hard one too (to fs.nr_open). Each socket is a
// file descriptor; 20k sockets do not fit the usual defaults.
func raiseFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("read RLIMIT_NOFILE", "err", err)
		return
	}
	before := lim
	if os.Geteuid() == 0 {
		ceiling := uint64(1 << 20)
		if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
			if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
				ceiling = n
			}
		}
		lim.Max = max(lim.Max, ceiling)
	}
	lim.Cur = lim.Max
	if lim == before {
		log.Info("RLIMIT_NOFILE already at its ceiling", "soft", lim.Cur, "hard", lim.Max)
		return
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		// Root without CAP_SYS_RESOURCE (a container) cannot raise the hard
		// limit: take the soft one up to it.
		log.Warn("cannot raise the hard RLIMIT_NOFILE; keeping it", "hard", before.Max, "wanted", lim.Max, "err", err)
		lim = syscall.Rlimit{Cur: before.Max, Max: before.Max}
		if lim == before {
			return
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn("raise RLIMIT_NOFILE", "from", before.Cur, "to", lim.Cur, "err", err)
			return
		}
	}
	log.Info("raised RLIMIT_NOFILE", "soft_from", before.Cur, "hard_from", before.Max, "soft", lim.Cur, "hard", lim.Max)
}
