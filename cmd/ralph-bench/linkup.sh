#!/usr/bin/env bash
# Link-up benchmark: how long after the upstream comes back from an outage
# the first message reaches it. Ralph runs with its default reconnect
# settings (reconnect_min 1s, reconnect_max 60s) while a device publishes
# 10 messages a second; Mosquitto, the upstream, is killed, stays down for
# each OUTAGE (seconds), and is started again on the same port; a
# subscriber connects as soon as it listens. Reported: from Mosquitto
# listening again to the subscriber's first message.
#
#   bash cmd/ralph-bench/linkup.sh [OUTAGE...]      # default: 60 600
#   RALPH=/path/to/other/ralph bash cmd/ralph-bench/linkup.sh 60
#
# Needs mosquitto (apt-get install -y mosquitto). Everything runs on
# 127.0.0.1 and is stopped at the end.
set -euo pipefail
[ $# -gt 0 ] || set -- 60 600
cd "$(dirname "$0")/../.."
. cmd/ralph-bench/common.sh
work=$(mktemp -d /tmp/ralph-linkup.XXXXXX)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$work"' EXIT
build_tools "$work"

RPORT=18951 MPORT=18960
cat > "$work/ralph.toml" <<TOML
data_dir = "$work/data"
[broker]
listen = ["127.0.0.1:$RPORT"]
[http]
listen = "127.0.0.1:0"
[[bridge]]
name = "up"
urls = ["mqtt://127.0.0.1:$MPORT"]
client_id = "ralph-linkup"
  [[bridge.forward]]
  local = "bench/#"
  remote_prefix = "edge/"
  qos = 1
TOML
mosquitto_conf "$work/mosquitto.conf" $MPORT
now_ms() { date +%s%3N; }

mosquitto -c "$work/mosquitto.conf" 2>/dev/null & echo $! > "$work/mosq.pid"
wait_port $MPORT
"$work/ralph" run --config "$work/ralph.toml" 2> "$work/ralph.log" & echo $! > "$work/ralph.pid"
wait_port $RPORT
total=60
for o in "$@"; do total=$((total + o + 30)); done
"$work/rb" -broker 127.0.0.1:$RPORT -publishers 1 -messages $((total * 10)) -rate 10 -qos 1 -inflight 1 -drain-wait 0s -timeout $((total + 60))s > /dev/null 2>&1 & echo $! > "$work/pub.pid"
for o in "$@"; do
	sleep 5 # the link up and forwarding
	kill "$(cat "$work/mosq.pid")"; wait "$(cat "$work/mosq.pid")" 2>/dev/null || true
	sleep "$o"
	mosquitto -c "$work/mosquitto.conf" 2>/dev/null & echo $! > "$work/mosq.pid"
	wait_port $MPORT
	t0=$(now_ms)
	"$work/rb" -broker 127.0.0.1:$MPORT -subscribe-only -topic 'edge/#' -expect 1 -timeout 5m > "$work/sub.out" 2>&1 || true
	echo "outage ${o}s: first message upstream $(( $(now_ms) - t0 )) ms after it listened again"
done
