#!/usr/bin/env bash
# Broker CPU per message, side by side: 400,000 QoS 1 messages (10
# publishers x 40,000, 32 in flight, 64-byte payloads) into Ralph (its
# default config, sync durability, no bridge), into another build of Ralph
# if one is given, and into Mosquitto without persistence, RUNS rounds;
# prints each run's rate and the broker's user and system CPU from
# /proc/PID/stat.
#
#   bash cmd/ralph-bench/cpu.sh [RUNS] [OTHER_RALPH]
#
# Needs mosquitto. Everything runs on 127.0.0.1 and is stopped at the end.
set -euo pipefail
RUNS=${1:-3}
OTHER=${2:-}
cd "$(dirname "$0")/../.."
. cmd/ralph-bench/common.sh
work=$(mktemp -d /tmp/ralph-cpu.XXXXXX)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.3; rm -rf "$work"' EXIT
build_tools "$work"
if [ -n "$OTHER" ]; then cp "$OTHER" "$work/other"; fi

RPORT=18963 MPORT=18964
mosquitto_conf "$work/mosquitto.conf" $MPORT
printf 'data_dir = "%s/data"\n[broker]\nlisten = ["127.0.0.1:%s"]\n[http]\nlisten = "127.0.0.1:0"\n' "$work" $RPORT > "$work/ralph.toml"
ticks=$(getconf CLK_TCK)

for _ in $(seq "$RUNS"); do
	for b in ralph other mosquitto; do
		case $b in
		other) [ -n "$OTHER" ] || continue ;&
		ralph) rm -rf "$work/data"; "$work/$b" run --config "$work/ralph.toml" 2> /dev/null & echo $! > "$work/broker.pid"; port=$RPORT ;;
		mosquitto) mosquitto -c "$work/mosquitto.conf" 2> /dev/null & echo $! > "$work/broker.pid"; port=$MPORT ;;
		esac
		wait_port $port
		rate=$("$work/rb" -broker 127.0.0.1:$port -qos 1 -size 64 -publishers 10 -messages 40000 -inflight 32 | awk '/throughput/ {print $2}')
		pid=$(cat "$work/broker.pid")
		awk -v b=$b -v r="$rate" -v hz="$ticks" '{u = $14 / hz; s = $15 / hz; printf "%-10s %6d msgs/s  user %.2f s  system %.2f s  %.1f us a message\n", b, r, u, s, (u + s) / 400000 * 1e6}' "/proc/$pid/stat"
		kill "$pid"; wait "$pid" 2> /dev/null || true; rm "$work/broker.pid"
	done
done
