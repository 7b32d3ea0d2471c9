#!/usr/bin/env bash
# Backlog benchmark: queue N messages with the upstream down, restart ralph,
# bring the upstream (Mosquitto) up and drain; then publish the same load
# straight into Mosquitto with the same client for comparison.
#
#   bash cmd/ralph-bench/backlog.sh [N]        # default N = 1000000
#
# Needs mosquitto (apt-get install -y mosquitto). Everything runs on
# 127.0.0.1 and is stopped at the end.
set -euo pipefail
N=${1:-1000000}
PUBS=10
cd "$(dirname "$0")/../.."
work=$(mktemp -d /tmp/ralph-backlog.XXXXXX)
KEEP=${KEEP:-}
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; [ -n "$KEEP" ] || rm -rf "$work"' EXIT
go build -o "$work/ralph" ./cmd/ralph
go build -o "$work/rb" ./cmd/ralph-bench

RPORT=18931 MPORT=18940
cat > "$work/ralph.toml" <<TOML
data_dir = "$work/data"
[broker]
listen = ["127.0.0.1:$RPORT"]
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
cat > "$work/mosquitto.conf" <<CONF
listener $MPORT 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 0
set_tcp_nodelay true
log_dest none
CONF
[ "$(id -u)" = 0 ] && echo "user root" >> "$work/mosquitto.conf"

now_ms() { date +%s%3N; }
wait_port() { until (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null; do sleep 0.005; done; }
mib() { awk '{printf "%.1f MiB", $1/1048576}'; }
# Peak RSS, and the current split between heap (anonymous) and mapped
# database files (file-backed pages the kernel can drop under pressure).
hwm() { awk '/VmHWM|RssAnon|RssFile/ {printf "%s %.1f MiB  ", $1, $2/1024}' /proc/$1/status; }

echo "== ingest: $N x 64 B QoS 1 from $PUBS publishers, upstream down"
"$work/ralph" run --config "$work/ralph.toml" 2> "$work/ralph1.log" & echo $! > "$work/ralph.pid"
wait_port $RPORT
"$work/rb" -broker 127.0.0.1:$RPORT -publishers $PUBS -messages $((N / PUBS)) -qos 1 -inflight 32 -pid "$(cat "$work/ralph.pid")" | grep -E 'throughput|ack latency|rss'
echo "ralph memory after ingest: $(hwm "$(cat "$work/ralph.pid")")"
written=$(awk '$1 == "write_bytes:" {print $2}' /proc/"$(cat "$work/ralph.pid")"/io)
echo "disk written per message: $((written / N)) bytes"
kill -TERM "$(cat "$work/ralph.pid")"; wait "$(cat "$work/ralph.pid")" || true
echo "data dir with backlog: $(du -s --block-size=1 "$work/data" | cut -f1 | mib)"

echo "== restart with the backlog, upstream up, drain"
mosquitto -c "$work/mosquitto.conf" 2>/dev/null & echo $! > "$work/mosq.pid"
wait_port $MPORT
"$work/rb" -broker 127.0.0.1:$MPORT -subscribe-only -topic 'edge/#' -expect "$N" -timeout 10m > "$work/drain.out" & echo $! > "$work/sub.pid"
sleep 0.5
t0=$(now_ms)
"$work/ralph" run --config "$work/ralph.toml" 2> "$work/ralph2.log" & echo $! > "$work/ralph.pid"
wait_port $RPORT
echo "restart to accepting connections: $(( $(now_ms) - t0 )) ms"
wait "$(cat "$work/sub.pid")" || true
grep -E 'received|integrity|throughput' "$work/drain.out"
echo "ralph memory after restart + drain: $(hwm "$(cat "$work/ralph.pid")")"
sleep 5 # let deletions commit and compaction run
grep -E "reclaim" "$work/ralph2.log" || true
kill -TERM "$(cat "$work/ralph.pid")"; wait "$(cat "$work/ralph.pid")" || true
echo "data dir after drain: $(du -s --block-size=1 "$work/data" | cut -f1 | mib)"
ls -la "$work/data/db" | awk '{print $5, $9}' | sort -rn | head -5

echo "== direct: the same messages from one connection, 32 in flight, into Mosquitto"
"$work/rb" -broker 127.0.0.1:$MPORT -subscribe-only -topic 'edge/#' -expect "$N" -timeout 10m > "$work/direct.out" & echo $! > "$work/sub.pid"
sleep 0.5
"$work/rb" -broker 127.0.0.1:$MPORT -publishers 1 -messages "$N" -qos 1 -inflight 32 -topic edge/direct > /dev/null
wait "$(cat "$work/sub.pid")" || true
grep -E 'received|throughput' "$work/direct.out"
