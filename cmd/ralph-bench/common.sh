# Shared by the benchmark scripts (sourced, not run).

# mosquitto_conf FILE PORT: Mosquitto as the benchmarks' anchor and
# upstream: loopback, no persistence, no in-flight or queue limits.
mosquitto_conf() {
	cat > "$1" <<CONF
listener $2 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 0
set_tcp_nodelay true
log_dest none
CONF
	if [ "$(id -u)" = 0 ]; then echo "user root" >> "$1"; fi
}

# wait_port PORT: until something listens on 127.0.0.1:PORT.
wait_port() { until (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null; do sleep 0.005; done; }

# build_tools DIR: DIR/ralph (a copy of $RALPH if set, else built from
# this checkout) and DIR/rb (ralph-bench).
build_tools() {
	if [ -n "${RALPH:-}" ]; then cp "$RALPH" "$1/ralph"; else go build -o "$1/ralph" ./cmd/ralph; fi
	go build -o "$1/rb" ./cmd/ralph-bench
}
