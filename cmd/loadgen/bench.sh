#!/usr/bin/env bash
# bench.sh — `make bench`: start a fresh server on a private PostgreSQL, run
# the standard load-generator scenarios against it, print one Markdown table,
# and stop the server with SIGTERM whatever happens.
#
# Sizes fit a 2-core machine in a few minutes; override them from the
# environment, e.g. `DIRECT_RATES=500 GROUP_SIZE=200 make bench`.
# Results: .data/bench-results.md; server log: .data/bench-server.log.
set -euo pipefail
cd "$(dirname "$0")/../.."

LISTEN=${BENCH_LISTEN:-127.0.0.1:5388}
SEED=${BENCH_SEED:-1}
IDLE_SOCKETS=${IDLE_SOCKETS:-20000}
IDLE_MEMBERS=${IDLE_MEMBERS:-1000}
IDLE_HOLD=${IDLE_HOLD:-30s} # longer than the server's 25 s ping interval
DIRECT_PAIRS=${DIRECT_PAIRS:-500}
DIRECT_RATES=${DIRECT_RATES:-1000 2000} # msg/s: one run each, comfortable then heavy
DIRECT_DURATION=${DIRECT_DURATION:-20s}
GROUP_SIZE=${GROUP_SIZE:-1000}
GROUP_SENDERS=${GROUP_SENDERS:-10}
GROUP_RATES=${GROUP_RATES:-20 50}
GROUP_DURATION=${GROUP_DURATION:-20s}
LOGIN_CLIENTS=${LOGIN_CLIENTS:-32}
LOGIN_DURATION=${LOGIN_DURATION:-10s}
SCENARIOS=${BENCH_SCENARIOS:-login direct group idle} # which to run, in this order
# With BENCH_PROFILE_DIR set, the server also serves /debug/pprof on
# BENCH_DEBUG_LISTEN, and each direct and group run writes CPU profiles of its
# load period there: <run>-server.pprof and <run>-loadgen.pprof.
PROFILE_DIR=${BENCH_PROFILE_DIR:-}
DEBUG_LISTEN=${BENCH_DEBUG_LISTEN:-127.0.0.1:5389}
# Binaries to compare (A/B runs): default the ones `make build` just wrote.
SERVER_BIN=${BENCH_SERVER_BIN:-bin/karlmalone}
LOADGEN_BIN=${BENCH_LOADGEN_BIN:-bin/loadgen}
# More loadgen flags for every run, e.g. "-rpc-protocol h2c" or "-push-encoding proto".
read -r -a extra_flags <<<"${BENCH_LOADGEN_FLAGS:-}"

mkdir -p .data
LOG=.data/bench-server.log
RESULTS=.data/bench-results.md

# Every socket is a file descriptor on both ends. Raise the hard limit where
# allowed (root with CAP_SYS_RESOURCE), then the soft one to it; the server
# and loadgen inherit it.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ "$IDLE_SOCKETS" -gt $((nofile - 1000)) ]; then
	echo "bench: RLIMIT_NOFILE is $nofile (hard, cannot be raised here): idle scenario capped at $((nofile - 1000)) sockets" >&2
	IDLE_SOCKETS=$((nofile - 1000))
fi

devpg_pid=
stop_server() {
	[ -n "$devpg_pid" ] || return 0
	if kill -0 "$devpg_pid" 2>/dev/null; then
		echo "bench: stopping the server (SIGTERM to devpg $devpg_pid, which stops PostgreSQL after it)" >&2
		kill -TERM "$devpg_pid" 2>/dev/null || true
		for _ in $(seq 1 60); do
			kill -0 "$devpg_pid" 2>/dev/null || break
			sleep 1
		done
		if kill -0 "$devpg_pid" 2>/dev/null; then
			echo "bench: devpg $devpg_pid still running after 60 s; see $LOG" >&2
		fi
	fi
	wait "$devpg_pid" 2>/dev/null || true
	devpg_pid=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

debug_args=()
profile_args=()
if [ -n "$PROFILE_DIR" ]; then
	mkdir -p "$PROFILE_DIR"
	debug_args=(-debug-listen "$DEBUG_LISTEN")
	profile_args=(-profile-dir "$PROFILE_DIR" -server-debug "$DEBUG_LISTEN")
fi

echo "bench: starting the server on $LISTEN (log: $LOG)" >&2
bin/devpg -dir .data/bench-postgres -db karlmalone_bench -- \
	"$SERVER_BIN" serve -listen "$LISTEN" -insecure-fast-password-hash \
	-register-rate 0 -login-rate-addr 0 -login-rate-phone-addr 0 -send-rate 0 "${debug_args[@]}" >"$LOG" 2>&1 &
devpg_pid=$!

addr="http://$LISTEN"
for i in $(seq 1 240); do
	if ! kill -0 "$devpg_pid" 2>/dev/null; then
		echo "bench: the server exited during startup:" >&2
		tail -20 "$LOG" >&2
		exit 1
	fi
	if curl -fsS -o /dev/null --max-time 2 "$addr/readyz" 2>/dev/null; then
		break
	fi
	if [ "$i" = 240 ]; then
		echo "bench: the server was not ready after 120 s:" >&2
		tail -20 "$LOG" >&2
		exit 1
	fi
	sleep 0.5
done
server_pid=$(pgrep -P "$devpg_pid" -x karlmalone || true)
if [ -z "$server_pid" ]; then
	echo "bench: cannot find the karlmalone process under devpg $devpg_pid" >&2
	exit 1
fi
# The postmaster, for PostgreSQL's CPU (its backends are its children).
pg_pid=$(head -1 .data/bench-postgres/data/postmaster.pid 2>/dev/null || echo 0)
echo "bench: server ready (pid $server_pid; PostgreSQL postmaster $pg_pid)" >&2

status=0
header=true
scenario() {
	echo "bench: loadgen $*" >&2
	local rc=0
	"$LOADGEN_BIN" -addr "$addr" -seed "$SEED" -server-pid "$server_pid" -pg-pid "$pg_pid" -header="$header" "${profile_args[@]}" "${extra_flags[@]}" "$@" | tee -a "$RESULTS" >&2 || rc=$?
	if [ "$rc" = 130 ]; then
		# loadgen handled the Ctrl-C (and reported); bash runs no INT trap
		# for a child that exits normally, so stop here ourselves.
		echo "bench: interrupted" >&2
		exit 130
	elif [ "$rc" != 0 ]; then
		echo "bench: scenario failed (exit $rc): $*" >&2
		status=1
	fi
	[ -s "$RESULTS" ] && header=false
	kill -0 "$server_pid" 2>/dev/null || { echo "bench: the server died; see $LOG" >&2; exit 1; }
}

: >"$RESULTS"
for s in $SCENARIOS; do
	case $s in
	login)
		scenario -scenario login -members 1000 -login-clients "$LOGIN_CLIENTS" -duration "$LOGIN_DURATION"
		;;
	direct)
		for rate in $DIRECT_RATES; do
			scenario -scenario direct -pairs "$DIRECT_PAIRS" -rate "$rate" -duration "$DIRECT_DURATION"
		done
		;;
	group)
		for rate in $GROUP_RATES; do
			scenario -scenario group -group-size "$GROUP_SIZE" -senders "$GROUP_SENDERS" -rate "$rate" -duration "$GROUP_DURATION"
		done
		;;
	idle)
		scenario -scenario idle -members "$IDLE_MEMBERS" -sockets "$IDLE_SOCKETS" -duration "$IDLE_HOLD"
		;;
	*)
		echo "bench: unknown scenario $s in BENCH_SCENARIOS" >&2
		exit 2
		;;
	esac
done

stop_server
{
	echo
	echo "Machine: $(nproc) cores, $(free -m | awk '/^Mem:/ {print $2}') MiB RAM, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end;" \
		"$(go version | cut -d' ' -f3-); $(postgres --version 2>/dev/null || echo 'PostgreSQL: unknown version')."
} >>"$RESULTS"
echo >&2
echo "bench: all results (also in $RESULTS):" >&2
cat "$RESULTS"
exit "$status"
