#!/usr/bin/env bash
# Ingest benchmark, side by side: QoS 1, 64-byte payloads, into Ralph (sync
# durability, default config, no bridge) and into Mosquitto without
# persistence, with the same client, alternately, RUNS times each; prints
# the medians and the ratio. The last two loads are a QoS 0 fan-in, 10
# publishers into 1 subscriber (MQTT 5, then mosquitto_sub on MQTT
# 3.1.1): their figure is what the subscriber received a second, and what
# it missed (dropped for it) is shown too.
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

# start_broker KIND: a fresh Ralph or Mosquitto; sets port.
start_broker() {
	if [ "$1" = ralph ]; then
		rm -rf "$work/data"
		printf 'data_dir = "%s/data"\n[broker]\nlisten = ["127.0.0.1:%s"]\n[http]\nlisten = "127.0.0.1:0"\n' "$work" $RPORT > "$work/ralph.toml"
		"$work/ralph" run --config "$work/ralph.toml" 2> "$work/ralph.log" & echo $! > "$work/broker.pid"
		wait_port $RPORT; port=$RPORT
	else
		mosquitto -c "$work/mosquitto.conf" & echo $! > "$work/broker.pid"
		wait_port $MPORT; port=$MPORT
	fi
}
stop_broker() { kill "$(cat "$work/broker.pid")"; wait "$(cat "$work/broker.pid")" 2>/dev/null || true; rm "$work/broker.pid"; }

# rate BROKER-KIND LOAD...: one run on a fresh broker, prints msgs/s and
# what the subscriber missed. The load "mqtt311" is the QoS 0 fan-in into
# an MQTT 3.1.1 subscriber, mosquitto_sub: its rate is what it received
# over the time from the publishers' start to its last message.
rate() {
	local kind=$1; shift
	start_broker "$kind"
	if [ "$1" = mqtt311 ]; then
		mosquitto_sub -h 127.0.0.1 -p $port -V mqttv311 -q 0 -t 'bench/#' -F %U -C 200000 -W 20 > "$work/sub311" & local sub=$!
		sleep 0.5 # subscribed
		local t0; t0=$(date +%s.%N)
		"$work/rb" -broker 127.0.0.1:$port -qos 0 -size 64 -publishers 10 -messages 20000 -drain-wait 1s > /dev/null || true
		wait $sub || true
		awk -v t0="$t0" '{n++; last = $1} END {printf "%d %d\n", n / (last - t0), 200000 - n}' "$work/sub311"
	else
		# The last throughput line is the subscribers' when there are any.
		"$work/rb" -broker 127.0.0.1:$port -qos 1 -size 64 -drain-wait 3s "$@" | awk '/throughput/ {v = $2} /missing/ {m = $3} END {print v, m + 0}' || true
	fi
	stop_broker
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for load in "-publishers 10 -messages 40000 -inflight 32" "-publishers 1 -messages 100000 -inflight 32" "-publishers 1 -messages 5000 -inflight 1" "-publishers 10 -messages 20000 -qos 0 -subscribers 1" mqtt311; do
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
