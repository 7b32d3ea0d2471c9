#!/usr/bin/env bash
# Backlog benchmark: queue N messages with the upstream down, restart ralph,
# bring the upstream (Mosquitto) up and drain; then publish the same load
# straight into Mosquitto with the same client for comparison.
#
#   bash cmd/ralph-bench/backlog.sh [N]        # default N = 1000000
#   MEMORY_MAX=64M bash cmd/ralph-bench/backlog.sh
#   RALPH=/path/to/other/ralph bash cmd/ralph-bench/backlog.sh   # another build of Ralph
#   DRAIN_PROFILE=/tmp/drain.pprof bash cmd/ralph-bench/backlog.sh # CPU profile of the drain
#   PRIORITIES=1 bash cmd/ralph-bench/backlog.sh  # publisher 0's messages (a tenth) at priority 0, the rest at 4
#
# With MEMORY_MAX, ralph runs in a memory cgroup of that size (page cache
# counted, as systemd's MemoryMax counts it; cgroup v2 or v1, as root) and
# the ingest ends with SIGKILL instead of SIGTERM; an OOM kill is reported.
# Needs mosquitto (apt-get install -y mosquitto). Everything runs on
# 127.0.0.1 and is stopped at the end.
set -euo pipefail
N=${1:-1000000}
PUBS=10
cd "$(dirname "$0")/../.."
. cmd/ralph-bench/common.sh
work=$(mktemp -d /tmp/ralph-backlog.XXXXXX)
KEEP=${KEEP:-}
cg=""
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; [ -n "$cg" ] && rmdir "$cg"; [ -n "$KEEP" ] || rm -rf "$work"' EXIT
if [ -n "${MEMORY_MAX:-}" ]; then
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		cg=/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)/ralph-backlog-$$
		mkdir "$cg"; echo "$MEMORY_MAX" > "$cg/memory.max"; echo 0 > "$cg/memory.swap.max" 2>/dev/null || true
	else
		cg=/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)/ralph-backlog-$$
		mkdir "$cg"; echo "$MEMORY_MAX" > "$cg/memory.limit_in_bytes"
	fi
fi
# start_ralph LOG: ralph in the background (in the cgroup, if any), its PID in ralph.pid.
start_ralph() {
	( [ -n "$cg" ] && echo "$BASHPID" > "$cg/cgroup.procs"; exec "$work/ralph" run --config "$work/ralph.toml" ) 2> "$1" &
	echo $! > "$work/ralph.pid"
}
# stop_ralph: SIGTERM, or SIGKILL in a cgroup run; says so if ralph was OOM-killed.
stop_ralph() {
	local pid; pid=$(cat "$work/ralph.pid")
	if ! kill -0 "$pid" 2>/dev/null; then
		wait "$pid" || echo "RALPH DIED (exit $?): OOM-killed? $(cat "$cg"/memory.events 2>/dev/null | grep oom_kill || grep oom_kill "$cg"/memory.oom_control 2>/dev/null)"
		return
	fi
	if [ -n "$cg" ]; then kill -KILL "$pid"; else kill -TERM "$pid"; fi
	wait "$pid" || true
}
cgpeak() {
	[ -n "$cg" ] || return 0
	echo "cgroup peak (page cache included): $( (cat "$cg/memory.peak" 2>/dev/null || cat "$cg/memory.max_usage_in_bytes") | mib) of $MEMORY_MAX"
}
build_tools "$work"

RPORT=18931 MPORT=18940
cat > "$work/ralph.toml" <<TOML
data_dir = "$work/data"
[broker]
listen = ["127.0.0.1:$RPORT"]
[http]
listen = "127.0.0.1:0"
[queue]
max_bytes = "0"
[[bridge]]
name = "up"
urls = ["mqtt://127.0.0.1:$MPORT"]
client_id = "ralph-backlog"
reconnect_min = "100ms"
reconnect_max = "500ms"
  [[bridge.forward]]
  local = "bench/#"
  remote_prefix = "edge/"
  qos = 1
TOML
if [ -n "${PRIORITIES:-}" ]; then
	# A rule of its own, before the other: two lanes, each reading the log.
	sed -i 's|^  \[\[bridge.forward\]\]$|  [[bridge.forward]]\n  local = "bench/0"\n  remote_prefix = "edge/"\n  qos = 1\n  priority = 0\n  [[bridge.forward]]|' "$work/ralph.toml"
fi
mosquitto_conf "$work/mosquitto.conf" $MPORT

now_ms() { date +%s%3N; }
mib() { awk '{printf "%.1f MiB", $1/1048576}'; }
# Peak RSS, and the current split between heap (anonymous) and mapped
# database files (file-backed pages the kernel can drop under pressure).
hwm() { awk '/VmHWM|RssAnon|RssFile/ {printf "%s %.1f MiB  ", $1, $2/1024}' /proc/$1/status; }

echo "== ingest: $N x 64 B QoS 1 from $PUBS publishers, upstream down"
start_ralph "$work/ralph1.log"
wait_port $RPORT
"$work/rb" -broker 127.0.0.1:$RPORT -publishers $PUBS -messages $((N / PUBS)) -qos 1 -inflight 32 -pid "$(cat "$work/ralph.pid")" | grep -E 'throughput|ack latency|rss'
echo "ralph memory after ingest: $(hwm "$(cat "$work/ralph.pid")")"
written=$(awk '$1 == "write_bytes:" {print $2}' /proc/"$(cat "$work/ralph.pid")"/io)
echo "disk written per message: $((written / N)) bytes"
cgpeak
stop_ralph
echo "data dir with backlog: $(du -s --block-size=1 "$work/data" | cut -f1 | mib)"

echo "== restart with the backlog, upstream up, drain"
mosquitto -c "$work/mosquitto.conf" 2>/dev/null & echo $! > "$work/mosq.pid"
wait_port $MPORT
"$work/rb" -broker 127.0.0.1:$MPORT -subscribe-only -topic 'edge/#' -expect "$N" -timeout 10m > "$work/drain.out" & echo $! > "$work/sub.pid"
sleep 0.5
t0=$(now_ms)
RALPH_CPUPROFILE=${DRAIN_PROFILE:-} start_ralph "$work/ralph2.log"
wait_port $RPORT
echo "restart to accepting connections: $(( $(now_ms) - t0 )) ms"
wait "$(cat "$work/sub.pid")" || true
grep -E 'received|integrity|throughput' "$work/drain.out"
echo "ralph memory after restart + drain: $(hwm "$(cat "$work/ralph.pid")")"
sleep 5 # let deletions commit and compaction run
grep -E "reclaim" "$work/ralph2.log" || true
cgpeak
stop_ralph
echo "data dir after drain: $(du -s --block-size=1 "$work/data" | cut -f1 | mib)"
ls -la "$work/data/db" | awk '{print $5, $9}' | sort -rn | head -5

echo "== direct: the same messages from one connection, 32 in flight, into Mosquitto"
"$work/rb" -broker 127.0.0.1:$MPORT -subscribe-only -topic 'edge/#' -expect "$N" -timeout 10m > "$work/direct.out" & echo $! > "$work/sub.pid"
sleep 0.5
"$work/rb" -broker 127.0.0.1:$MPORT -publishers 1 -messages "$N" -qos 1 -inflight 32 -topic edge/direct > /dev/null
wait "$(cat "$work/sub.pid")" || true
grep -E 'received|throughput' "$work/direct.out"
