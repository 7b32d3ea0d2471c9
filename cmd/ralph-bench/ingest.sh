#!/usr/bin/env bash
# Ingest benchmark, side by side: QoS 1, 64-byte payloads, into Ralph (sync
# durability, default config, no bridge) and into Mosquitto without
# persistence, with the same client, alternately, RUNS times each; prints
# the medians and the ratio. The last load is a QoS 0 fan-in, 10
# publishers into 1 subscriber: its figure is what the subscriber
# received a second, and what it missed (dropped for it) is shown too.
#
#   bash cmd/ralph-bench/ingest.sh [RUNS]          # default 3
#   RALPH=/path/to/other/ralph bash cmd/ralph-bench/ingest.sh   # another build of Ralph
#
# Needs mosquitto. Everything runs on 127.0.0.1 and is stopped at the end.
set -euo pipefail
RUNS=${1:-3}
cd "$(dirname "$0")/../.."
. cmd/ralph-bench/common.sh
work=$(mktemp -d /tmp/ralph-ingest.XXXXXX)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.3; rm -rf "$work"' EXIT
build_tools "$work"

RPORT=18961 MPORT=18962
mosquitto_conf "$work/mosquitto.conf" $MPORT

# rate BROKER-KIND LOAD...: one run on a fresh broker, prints msgs/s.
rate() {
	local kind=$1; shift
	if [ "$kind" = ralph ]; then
		rm -rf "$work/data"
		printf 'data_dir = "%s/data"\n[broker]\nlisten = ["127.0.0.1:%s"]\n[http]\nlisten = "127.0.0.1:0"\n' "$work" $RPORT > "$work/ralph.toml"
		"$work/ralph" run --config "$work/ralph.toml" 2> "$work/ralph.log" & echo $! > "$work/broker.pid"
		wait_port $RPORT; port=$RPORT
	else
		mosquitto -c "$work/mosquitto.conf" & echo $! > "$work/broker.pid"
		wait_port $MPORT; port=$MPORT
	fi
	# The last throughput line is the subscribers' when there are any.
	"$work/rb" -broker 127.0.0.1:$port -qos 1 -size 64 -drain-wait 3s "$@" | awk '/throughput/ {v = $2} /missing/ {m = $3} END {print v, m + 0}' || true
	kill "$(cat "$work/broker.pid")"; wait "$(cat "$work/broker.pid")" 2>/dev/null || true; rm "$work/broker.pid"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for load in "-publishers 10 -messages 20000 -inflight 32" "-publishers 1 -messages 100000 -inflight 32" "-publishers 1 -messages 5000 -inflight 1" "-publishers 10 -messages 20000 -qos 0 -subscribers 1"; do
	: > "$work/r"; : > "$work/m"
	for _ in $(seq "$RUNS"); do
		rate ralph $load >> "$work/r"
		rate mosquitto $load >> "$work/m"
	done
	r=$(cut -d' ' -f1 < "$work/r" | median) m=$(cut -d' ' -f1 < "$work/m" | median)
	awk -v l="$load" -v r="$r" -v m="$m" -v rr="$(cut -d' ' -f1 < "$work/r" | tr '\n' ' ')" -v mm="$(cut -d' ' -f1 < "$work/m" | tr '\n' ' ')" \
		-v rl="$(cut -d' ' -f2 < "$work/r" | tr '\n' ' ')" -v ml="$(cut -d' ' -f2 < "$work/m" | tr '\n' ' ')" \
		'BEGIN {printf "%-45s ralph %7d  mosquitto %7d  ratio %.2f   (ralph: %s; mosquitto: %s; missed at the subscriber: ralph %s, mosquitto %s)\n", l, r, m, r/m, rr, mm, rl, ml}'
done
