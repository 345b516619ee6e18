#!/usr/bin/env bash
# bench-cluster.sh — `make bench-cluster`: start a cluster (one nats-server,
# CLUSTER_NODES karlmalone nodes, one private PostgreSQL) with bin/cluster,
# then measure, through loadgen -addrs:
#
#   1. idle: IDLE_SOCKETS authenticated sockets spread over every node, with
#      each node's and nats-server's RSS before and while they are held;
#   2. direct messages at DIRECT_RATE msg/s, with both members of each pair on
#      one node, then on two different nodes: the latency crossing adds, and
#      nats-server's CPU;
#   3. a group of GROUP_SIZE members at GROUP_RATE msg/s, on one node, then
#      spread over three.
#
# Every process keeps the machine's 20,000-descriptor limit: a node holds
# IDLE_SOCKETS/CLUSTER_NODES sockets, and the idle sockets are opened by
# several loadgen processes (IDLE_PER_LOADGEN sockets each, their own
# members), each spreading its connections over every node and over 255
# loopback source addresses (28k ephemeral ports each). Bounded in time: each load
# phase has its own -duration and -setup-timeout; the whole script stops after
# BENCH_TIMEOUT. Results: .data/bench-cluster-results.md; logs:
# .data/bench-cluster.log (the cluster), .data/bench-cluster-loadgen.log.
set -euo pipefail
cd "$(dirname "$0")/../.."

NODES=${CLUSTER_NODES:-6}
PORT=${BENCH_CLUSTER_PORT:-5488}
NATS_PORT=${BENCH_CLUSTER_NATS_PORT:-4322}
SEED=${BENCH_SEED:-7}
IDLE_SOCKETS=${IDLE_SOCKETS:-100000}
IDLE_MEMBERS=${IDLE_MEMBERS:-10000}
IDLE_HOLD=${IDLE_HOLD:-90s} # past the server's 25 s ping interval, and long enough for every loadgen to hold at once
DIRECT_PAIRS=${DIRECT_PAIRS:-500}
DIRECT_RATE=${DIRECT_RATE:-1000}
GROUP_SIZE=${GROUP_SIZE:-100}
GROUP_SENDERS=${GROUP_SENDERS:-10}
GROUP_RATE=${GROUP_RATE:-100}
LOAD_DURATION=${LOAD_DURATION:-20s}
SCENARIOS=${BENCH_SCENARIOS:-idle direct group}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-1200} # seconds, the whole script
IDLE_PER_LOADGEN=${IDLE_PER_LOADGEN:-17000} # under the 20,000-descriptor limit
# More flags for every node, e.g. "-push-ping-timeout 30s" on a busy machine.
read -r -a node_flags <<<"${BENCH_NODE_FLAGS:-}"

mkdir -p .data
LOG=.data/bench-cluster.log
LGLOG=.data/bench-cluster-loadgen.log
RESULTS=.data/bench-cluster-results.md
: >"$LGLOG"

cluster_pid=
stop_cluster() {
	[ -n "$cluster_pid" ] || return 0
	if kill -0 "$cluster_pid" 2>/dev/null; then
		echo "bench-cluster: stopping the cluster (SIGTERM to devpg $cluster_pid)" >&2
		kill -TERM "$cluster_pid" 2>/dev/null || true
		for _ in $(seq 1 90); do
			kill -0 "$cluster_pid" 2>/dev/null || break
			sleep 1
		done
	fi
	wait "$cluster_pid" 2>/dev/null || true
	cluster_pid=
}
trap stop_cluster EXIT
trap 'exit 130' INT TERM
# The whole run is bounded: a watchdog ends it.
( sleep "$BENCH_TIMEOUT"; echo "bench-cluster: over $BENCH_TIMEOUT s, stopping" >&2; kill -TERM $$ ) &
watchdog=$!
trap 'kill $watchdog 2>/dev/null || true; stop_cluster' EXIT

echo "bench-cluster: starting nats-server and $NODES nodes on ports $PORT.. (log: $LOG)" >&2
bin/devpg -dir .data/bench-cluster/postgres -db karlmalone_bench -- \
	bin/cluster -nodes "$NODES" -port "$PORT" -nats-port "$NATS_PORT" -dir .data/bench-cluster -- \
	-insecure-fast-password-hash -register-rate 0 -login-rate-addr 0 -login-rate-phone-addr 0 -send-rate 0 \
	-log-level warn "${node_flags[@]}" >"$LOG" 2>&1 &
cluster_pid=$!

addrs=()
for i in $(seq 0 $((NODES - 1))); do
	addrs+=("http://127.0.0.1:$((PORT + i))")
done
for a in "${addrs[@]}"; do
	for i in $(seq 1 240); do
		kill -0 "$cluster_pid" 2>/dev/null || { echo "bench-cluster: the cluster exited:" >&2; tail -20 "$LOG" >&2; exit 1; }
		curl -fsS -o /dev/null --max-time 2 "$a/readyz" 2>/dev/null && break
		[ "$i" = 240 ] && { echo "bench-cluster: $a not ready after 120 s" >&2; exit 1; }
		sleep 0.5
	done
done
node_pids=()
for i in $(seq 0 $((NODES - 1))); do
	node_pids+=("$(pgrep -f "karlmalone serve -listen 127.0.0.1:$((PORT + i)) " | head -1)")
done
nats_pid=$(pgrep -f "nats-server -a 127.0.0.1 -p $NATS_PORT" | head -1)
echo "bench-cluster: ready; nodes ${node_pids[*]}, nats-server $nats_pid" >&2

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; } # KiB
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # user+system, 1/100 s
mib() { awk -v k="$1" 'BEGIN {printf "%.0f MiB", k / 1024}'; }
join() { local IFS=,; echo "$*"; }

loadgen() {
	echo "bench-cluster: loadgen $*" >&2
	bin/loadgen -fail-on-loss=false "$@" 2>>"$LGLOG"
}

{
	echo "## Cluster: $NODES nodes and one nats-server on this machine"
	echo
	echo "Started $(date -u +%Y-%m-%dT%H:%MZ); load average $(cut -d' ' -f1-3 /proc/loadavg) before the run (other engineers share the 2 cores)."
	echo
} >"$RESULTS"

for s in $SCENARIOS; do
	case $s in
	idle)
		declare -a before=()
		for p in "${node_pids[@]}"; do before+=("$(rss "$p")"); done
		nats_before=$(rss "$nats_pid")
		nats_ticks0=$(ticks "$nats_pid")
		procs=$(((IDLE_SOCKETS + IDLE_PER_LOADGEN - 1) / IDLE_PER_LOADGEN))
		lgs=()
		for k in $(seq 1 "$procs"); do
			: >".data/bench-cluster-idle-$k.log"
			n=$((IDLE_SOCKETS / procs + (k <= IDLE_SOCKETS % procs ? 1 : 0)))
			echo "bench-cluster: loadgen $k/$procs: idle, $n sockets" >&2
			bin/loadgen -fail-on-loss=false -seed "$((SEED * 100 + k))" -scenario idle -addrs "$(join "${addrs[@]}")" \
				-members "$((IDLE_MEMBERS / procs))" -sockets "$n" -duration "$IDLE_HOLD" \
				-setup-concurrency 16 -setup-timeout 8m -server-pid "${node_pids[0]}" \
				>".data/bench-cluster-idle-$k.md" 2>".data/bench-cluster-idle-$k.log" &
			lgs+=($!)
		done
		# Sample while every loadgen holds its sockets (each logs "load: holding").
		for k in $(seq 1 "$procs"); do
			until grep -q "load: holding" ".data/bench-cluster-idle-$k.log"; do
				kill -0 "${lgs[$((k - 1))]}" 2>/dev/null || break
				sleep 1
			done
		done
		sleep 5
		declare -a during=()
		for p in "${node_pids[@]}"; do during+=("$(rss "$p")"); done
		nats_during=$(rss "$nats_pid")
		open_now=0
		for p in "${node_pids[@]}"; do open_now=$((open_now + $(ls /proc/"$p"/fd | wc -l))); done
		for lg in "${lgs[@]}"; do wait "$lg" || echo "bench-cluster: an idle loadgen exited $?" >&2; done
		nats_ticks1=$(ticks "$nats_pid")
		held=0
		for k in $(seq 1 "$procs"); do
			h=$(grep -o 'held [0-9]*/[0-9]*' ".data/bench-cluster-idle-$k.md" | head -1 | cut -d' ' -f2 | cut -d/ -f1)
			held=$((held + ${h:-0}))
		done
		for k in $(seq 1 "$procs"); do
			echo "loadgen $k/$procs:"
			echo
			cat ".data/bench-cluster-idle-$k.md"
			echo
		done >.data/bench-cluster-idle.md
		{
			echo "### Idle: $IDLE_SOCKETS sockets over $IDLE_MEMBERS members, $NODES nodes, $procs loadgen processes"
			echo
			echo "Held: $held sockets (the sum of each loadgen's count at the end of its hold); $open_now descriptors open in the nodes when the RSS below was sampled (every loadgen holding). One table per loadgen process; their RSS columns are node-1's."
			echo
			cat .data/bench-cluster-idle.md
			echo
			echo "| process | RSS before | RSS with the sockets held | per socket held on it |"
			echo "|---|---:|---:|---:|"
			for i in "${!node_pids[@]}"; do
				per=$(awk -v a="${before[$i]}" -v b="${during[$i]}" -v n="$held" -v k="$NODES" 'BEGIN {if (n > 0) printf "%.1f KiB", (b - a) / (n / k); else print "—"}')
				echo "| node-$((i + 1)) | $(mib "${before[$i]}") | $(mib "${during[$i]}") | $per |"
			done
			per=$(awk -v a="$nats_before" -v b="$nats_during" -v n="$held" 'BEGIN {if (n > 0) printf "%.2f KiB", (b - a) / n; else print "—"}')
			echo "| nats-server | $(mib "$nats_before") | $(mib "$nats_during") | $per (per socket in the cluster) |"
			echo
			echo "nats-server CPU over the whole idle run (setup, ramp, hold): $(((nats_ticks1 - nats_ticks0) * 10)) ms."
			echo
		} >>"$RESULTS"
		;;
	direct | group)
		for where in one across; do
			if [ "$s" = direct ]; then
				args=(-scenario direct -pairs "$DIRECT_PAIRS" -rate "$DIRECT_RATE")
				[ "$where" = one ] && a=${addrs[0]} || a=$(join "${addrs[0]}" "${addrs[1]}")
			else
				args=(-scenario group -group-size "$GROUP_SIZE" -senders "$GROUP_SENDERS" -rate "$GROUP_RATE")
				[ "$where" = one ] && a=${addrs[0]} || a=$(join "${addrs[0]}" "${addrs[1]}" "${addrs[2]}")
			fi
			t0=$(ticks "$nats_pid")
			loadgen -seed "$SEED" "${args[@]}" -addrs "$a" -duration "$LOAD_DURATION" -setup-timeout 3m -server-pid "${node_pids[0]}" >.data/bench-cluster-run.md || true
			t1=$(ticks "$nats_pid")
			{
				echo "### $s, $where (-addrs $a)"
				echo
				cat .data/bench-cluster-run.md
				echo
				echo "nats-server CPU during the run (setup included): $(((t1 - t0) * 10)) ms."
				echo
			} >>"$RESULTS"
		done
		;;
	*)
		echo "bench-cluster: unknown scenario $s" >&2
		exit 2
		;;
	esac
done

echo "Load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; $(nproc) cores, $(free -m | awk '/^Mem:/ {print $2}') MiB RAM." >>"$RESULTS"
stop_cluster
cat "$RESULTS"
