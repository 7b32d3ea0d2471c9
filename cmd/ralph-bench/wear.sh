#!/usr/bin/env bash
# Flash-wear benchmark: what reaches the block device, and how many sync
# calls, per acknowledged message, with Ralph's default config.
#
#   bash cmd/ralph-bench/wear.sh [RATE] [DEVICES] [SECONDS]   # default 100 msg/s from 100 devices for 60 s
#   RALPH=/path/to/other/ralph bash cmd/ralph-bench/wear.sh    # another build of Ralph
#   WEAR_TOML=$'[queue]\nmax_syncs_per_second = 5' bash cmd/ralph-bench/wear.sh   # other settings
#
# The data dir is on a fresh ext4 file system of its own (a loop device,
# default mkfs options, as on Raspberry Pi OS), so the device's counters
# hold Ralph's writes only, file system journal included. Devices publish
# 64-byte QoS 1 messages, each waiting for its PUBACK (one in flight), at
# RATE in all. Sync calls are counted with strace (fsync, fdatasync, msync).
# Needs root, strace and e2fsprogs; everything is stopped and unmounted at
# the end.
set -euo pipefail
RATE=${1:-100} DEVICES=${2:-100} SECS=${3:-60}
cd "$(dirname "$0")/../.."
. cmd/ralph-bench/common.sh
work=$(mktemp -d /tmp/ralph-wear.XXXXXX)
loop=""
cleanup() {
	[ -f "$work/strace.pid" ] && kill "$(cat "$work/strace.pid")" 2>/dev/null || true
	[ -f "$work/ralph.pid" ] && kill "$(cat "$work/ralph.pid")" 2>/dev/null || true
	sleep 0.5
	mountpoint -q "$work/mnt" && umount "$work/mnt"
	[ -n "$loop" ] && losetup -d "$loop"
	rm -rf "$work"
}
trap cleanup EXIT
build_tools "$work"

truncate -s 2G "$work/disk.img"
mkfs.ext4 -q "$work/disk.img"
loop=$(losetup --find --show "$work/disk.img")
mkdir "$work/mnt"
mount "$loop" "$work/mnt"
dev=$(basename "$loop")
sectors() { awk '{print $7}' "/sys/block/$dev/stat"; }

PORT=18951
cat > "$work/ralph.toml" <<TOML
data_dir = "$work/mnt/ralph"
[broker]
listen = ["127.0.0.1:$PORT"]
[http]
listen = "127.0.0.1:18952"
${WEAR_TOML:-}
TOML
"$work/ralph" run --config "$work/ralph.toml" 2> "$work/ralph.log" & echo $! > "$work/ralph.pid"
wait_port $PORT
sync; sleep 1
strace -f -qq -c -e trace=fsync,fdatasync,msync,sync_file_range -o "$work/strace.out" -p "$(cat "$work/ralph.pid")" & echo $! > "$work/strace.pid"
sleep 0.5
before=$(sectors)
N=$((RATE * SECS / DEVICES))
"$work/rb" -broker 127.0.0.1:$PORT -publishers "$DEVICES" -messages "$N" -qos 1 -inflight 1 -rate "$RATE" | grep -E 'throughput|ack latency'
sleep 0.5 # the last commit's writes
after=$(sectors)
journal=$(awk 'NR == 1 {t = $1} /logged blocks/ {b = $1} END {printf "%d transactions, %d blocks logged each", t, b}' "/proc/fs/jbd2/$dev-8/info" 2>/dev/null || true)
kill "$(cat "$work/strace.pid")"; wait "$(cat "$work/strace.pid")" 2>/dev/null || true; rm "$work/strace.pid"
syncs=$(awk '$NF ~ /^(fsync|fdatasync|msync|sync_file_range)$/ {s += $4} END {print s+0}' "$work/strace.out")
msgs=$((N * DEVICES))
awk -v b=$(( (after - before) * 512 )) -v m=$msgs -v s=$syncs -v secs=$SECS -v rate=$RATE 'BEGIN {
	printf "messages %d at %d msg/s for %d s\n", m, rate, secs
	printf "block device: %d bytes written, %.0f bytes per message, %.2f GB a day at this rate\n", b, b/m, b/secs*86400/1e9
	printf "sync calls: %d, %.1f a second, %.2f per message\n", s, s/secs, s/m
}'
echo "file system journal (since mount): $journal"
