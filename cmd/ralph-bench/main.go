// Command ralph-bench is the MQTT v5 load generator behind every performance
// figure of the Ralph project. It drives Ralph and Mosquitto with the same
// client code (paho.golang's low-level paho package), so their numbers can be
// compared.
//
// A run connects -subscribers subscribers to <topic>/#, then -publishers
// publishers that each send -messages messages of -size bytes to
// <topic>/<publisher-index> at -qos, keeping up to -inflight publishes
// outstanding per connection (optionally capped at -rate messages/s in
// total). Every payload starts with the publisher index, a per-publisher
// sequence number and the send time, so subscribers count missing,
// duplicate and out-of-order messages and measure end-to-end latency. The
// sequence number and send time are stamped as the PUBLISH is written to the
// socket (see stampConn), so with -inflight > 1 the order check still reflects
// what the broker did, not the scheduling of the publishing goroutines. When
// the last publish is acknowledged, ralph-bench waits up to -drain-wait for
// the subscribers to receive everything, then reports:
//
//   - publish: messages sent, acknowledged and failed, first publish to last
//     acknowledgement, messages/s, and acknowledgement latency (Publish call
//     to return) percentiles for QoS 1 and 2;
//   - subscribers: messages received per subscriber, missing, duplicates,
//     out-of-order, messages/s (first to last receive) and end-to-end latency;
//   - with -pid, the broker process's VmHWM and the highest VmRSS sampled
//     every 100ms during the run.
//
// With -subscribe-only, ralph-bench only subscribes to -topic (as a filter
// if it contains a wildcard, otherwise <topic>/#) and waits for -expect
// messages or -timeout, e.g. to time how fast Ralph drains a backlog into an
// upstream broker.
//
// At QoS 0 there is no acknowledgement: "acked" counts publishes written to
// the socket, and no acknowledgement latency is reported.
//
// The exit status is 1 if a publish failed, fewer messages than planned were
// acknowledged, or subscribers are still missing messages after the drain
// wait (or, with -subscribe-only, fewer than -expect arrived); 2 for bad flags.
//
// Against Mosquitto, without persistence. Its defaults would skew the
// figures: max_inflight_messages 20 becomes a receive-maximum of 20 that caps
// -inflight, max_queued_messages 1000 drops QoS 1 messages to a subscriber
// that falls behind, and without set_tcp_nodelay Nagle's algorithm delays
// some PUBACKs by ~40ms (Go sockets, hence Ralph's, have TCP_NODELAY set):
//
//	cat >/tmp/bench-mosquitto.conf <<'EOF'
//	listener 18830 127.0.0.1
//	allow_anonymous true
//	persistence false
//	max_inflight_messages 0
//	max_queued_messages 0
//	set_tcp_nodelay true
//	EOF
//	mosquitto -c /tmp/bench-mosquitto.conf & MOSQ=$!
//	ralph-bench -broker tcp://127.0.0.1:18830 -publishers 10 -messages 20000 \
//	    -size 64 -qos 1 -inflight 32 -subscribers 1 -pid $MOSQ
//	kill $MOSQ
//
// Against Ralph listening on 127.0.0.1:1883, its PID in $RALPH:
//
//	ralph-bench -broker 127.0.0.1:1883 -publishers 10 -messages 20000 \
//	    -size 64 -qos 1 -inflight 32 -subscribers 1 -pid $RALPH -json
//
// Latency at a fixed rate, and a backlog drain watched on an upstream broker:
//
//	ralph-bench -broker 127.0.0.1:1883 -publishers 10 -messages 6000 -rate 2000 -subscribers 1
//	ralph-bench -broker tcp://127.0.0.1:18830 -subscribe-only -topic bench -expect 200000
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	Broker        string        `json:"broker"`
	Publishers    int           `json:"publishers"`
	Messages      int           `json:"messages"`
	Size          int           `json:"size"`
	QoS           int           `json:"qos"`
	Inflight      int           `json:"inflight"`
	Rate          float64       `json:"rate"`
	Subscribers   int           `json:"subscribers"`
	SubQoS        int           `json:"subqos"`
	SubSession    uint32        `json:"sub_session_expiry,omitempty"`
	Topic         string        `json:"topic"`
	PID           int           `json:"pid,omitempty"`
	Timeout       time.Duration `json:"-"` // see MarshalJSON
	DrainWait     time.Duration `json:"-"`
	JSON          bool          `json:"-"`
	ClientPrefix  string        `json:"client_prefix"`
	Username      string        `json:"username,omitempty"`
	Password      string        `json:"-"`
	SubscribeOnly bool          `json:"subscribe_only,omitempty"`
	Idle          int           `json:"idle,omitempty"`
	Expect        int64         `json:"expect,omitempty"`
	SerialLink    string        `json:"serial_link,omitempty"`
	Baud          int           `json:"baud,omitempty"`

	addr string // host:port to dial, from Broker
}

// MarshalJSON shows the durations as Go duration strings ("5m0s").
func (o *options) MarshalJSON() ([]byte, error) {
	type plain options
	return json.Marshal(struct {
		*plain
		Timeout   string `json:"timeout"`
		DrainWait string `json:"drain_wait"`
	}{(*plain)(o), o.Timeout.String(), o.DrainWait.String()})
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("ralph-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Broker, "broker", "tcp://127.0.0.1:1883", "broker address: tcp://host:port or host:port")
	fs.IntVar(&o.Publishers, "publishers", 10, "number of publisher connections")
	fs.IntVar(&o.Messages, "messages", 10000, "messages per publisher")
	fs.IntVar(&o.Size, "size", 64, "payload bytes (at least 16, the header)")
	fs.IntVar(&o.QoS, "qos", 1, "publish QoS (0, 1 or 2)")
	fs.IntVar(&o.Inflight, "inflight", 32, "outstanding publishes per publisher connection (concurrent Publish calls)")
	fs.Float64Var(&o.Rate, "rate", 0, "total publish rate cap across publishers, msgs/s (0 = unlimited)")
	fs.IntVar(&o.Subscribers, "subscribers", 0, "subscriber connections, each subscribed to <topic>/#")
	fs.IntVar(&o.SubQoS, "subqos", -1, "subscription QoS; -1 means the same as -qos")
	fs.Func("sub-session-expiry", "subscribers keep their session this many seconds after they disconnect (0: it ends with the connection)", func(v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		o.SubSession = uint32(n)
		return err
	})
	fs.StringVar(&o.Topic, "topic", "bench", "topic root: publishers use <topic>/<index>, subscribers <topic>/#")
	fs.IntVar(&o.PID, "pid", 0, "local process whose memory (VmHWM, sampled VmRSS) to report")
	fs.IntVar(&o.Idle, "idle", 0, "instead of a load: connect this many idle clients and report the -pid's memory per connection")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "overall time limit")
	fs.DurationVar(&o.DrainWait, "drain-wait", 10*time.Second, "how long subscribers may take, after the last ack, to receive everything")
	fs.BoolVar(&o.JSON, "json", false, "print the report as one JSON object on one line")
	fs.StringVar(&o.ClientPrefix, "client-prefix", "ralph-bench", "client ID prefix (IDs are <prefix>-<pid>-p<n> / -s<n>)")
	fs.StringVar(&o.Username, "username", "", "MQTT username")
	fs.StringVar(&o.Password, "password", "", "MQTT password")
	fs.BoolVar(&o.SubscribeOnly, "subscribe-only", false, "only subscribe to -topic and wait for -expect messages")
	fs.Int64Var(&o.Expect, "expect", 0, "with -subscribe-only: messages to wait for (per subscriber)")
	fs.StringVar(&o.SerialLink, "serial-link", "", "instead of MQTT: be a serial board on a pty linked here (Ralph's [[serial]] path), publishing -messages QoS 1 frames with -inflight awaiting ACK")
	fs.IntVar(&o.Baud, "baud", 0, "with -serial-link: pace the board's writes as a UART at this rate (0: unpaced)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return o, o.validate()
}

func (o *options) validate() error {
	var err error
	if o.addr, err = brokerAddr(o.Broker); err != nil {
		return err
	}
	if o.SubQoS < 0 {
		o.SubQoS = o.QoS
	}
	if o.SubscribeOnly && o.Subscribers == 0 {
		o.Subscribers = 1
	}
	switch {
	case o.QoS < 0 || o.QoS > 2:
		return fmt.Errorf("-qos %d: must be 0, 1 or 2", o.QoS)
	case o.SubQoS > 2:
		return fmt.Errorf("-subqos %d: must be 0, 1 or 2", o.SubQoS)
	case o.Topic == "" || (strings.ContainsAny(o.Topic, "+#") && !o.SubscribeOnly):
		return fmt.Errorf("-topic %q: must be non-empty and free of wildcards", o.Topic)
	case o.Subscribers < 0:
		return errors.New("-subscribers must not be negative")
	case o.Timeout <= 0 || o.DrainWait < 0:
		return errors.New("-timeout must be positive and -drain-wait not negative")
	case o.Size > 256<<20:
		return fmt.Errorf("-size %d: larger than MQTT's maximum packet size", o.Size)
	case o.SubscribeOnly:
		if o.Expect <= 0 {
			return errors.New("-subscribe-only needs -expect N > 0")
		}
	case o.Publishers < 1 || o.Messages < 1 || o.Inflight < 1:
		return errors.New("-publishers, -messages and -inflight must be at least 1")
	case o.Rate < 0:
		return errors.New("-rate must not be negative")
	}
	return nil
}

// brokerAddr turns tcp://host:port, mqtt://host:port or host:port into a
// dialable host:port, defaulting the port to 1883.
func brokerAddr(s string) (string, error) {
	hostport := s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", fmt.Errorf("-broker %q: %w", s, err)
		}
		if u.Scheme != "tcp" && u.Scheme != "mqtt" {
			return "", fmt.Errorf("-broker %q: only tcp:// (or mqtt://) is supported", s)
		}
		hostport = u.Host
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), "1883")
	}
	if host, _, _ := net.SplitHostPort(hostport); host == "" {
		return "", fmt.Errorf("-broker %q: no host", s)
	}
	return hostport, nil
}

func main() {
	os.Exit(mainExit())
}

// mainExit is main, returning the exit status so that deferred calls run.
func mainExit() int {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ralph-bench:", err)
		return 2
	}
	if o.Idle > 0 {
		if o.PID == 0 {
			fmt.Fprintln(os.Stderr, "ralph-bench: -idle needs -pid")
			return 2
		}
		if err := runIdle(o.Broker, o.Idle, o.PID, 3*time.Second, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "ralph-bench:", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if o.SerialLink != "" {
		if err := runSerial(ctx, o, o.SerialLink, o.Baud, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "ralph-bench:", err)
			return 1
		}
		return 0
	}

	r, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ralph-bench:", err)
		return 1
	}
	if o.JSON {
		_ = json.NewEncoder(os.Stdout).Encode(r) // one line, e.g. to collect runs as JSON Lines
	} else {
		r.writeText(os.Stdout)
	}
	if !r.OK {
		return 1
	}
	return 0
}

// report is the outcome of a run; -json prints it as is.
type report struct {
	Config       *options   `json:"config"`
	Mode         string     `json:"mode"` // "publish" or "subscribe-only"
	PayloadBytes int        `json:"payload_bytes,omitempty"`
	Publish      *pubReport `json:"publish,omitempty"`
	Subscribe    *subReport `json:"subscribe,omitempty"`
	RSS          *rssResult `json:"rss,omitempty"`
	ConnErrors   []string   `json:"connection_errors,omitempty"`
	Notes        []string   `json:"notes,omitempty"`
	OK           bool       `json:"ok"`
	Failures     []string   `json:"failures,omitempty"`

	// For the text report.
	pubElapsed, subElapsed, drain time.Duration
	ackLat, e2e                   latencySummary
}

type pubReport struct {
	Publishers     int          `json:"publishers"`
	Messages       int          `json:"messages_per_publisher"`
	Inflight       int          `json:"inflight"`
	QoS            int          `json:"qos"`
	RateLimit      float64      `json:"rate_limit,omitempty"`
	ServerRecvMax  int          `json:"server_receive_maximum"`
	Planned        int64        `json:"planned"`
	Sent           int64        `json:"sent"`
	Acked          int64        `json:"acked"`
	Errors         int64        `json:"errors"`
	FirstError     string       `json:"first_error,omitempty"`
	ElapsedSeconds float64      `json:"elapsed_s"`
	Rate           float64      `json:"msgs_per_s"`
	AckLatency     *latencyJSON `json:"ack_latency,omitempty"`
}

type subReport struct {
	Subscribers    int          `json:"subscribers"`
	Filter         string       `json:"filter"`
	QoS            int          `json:"qos"`
	GrantedQoS     int          `json:"granted_qos"`
	Expected       int64        `json:"expected_per_subscriber"`
	ReceivedMin    int64        `json:"received_min"`
	ReceivedMax    int64        `json:"received_max"`
	Missing        int64        `json:"missing"`
	Duplicates     int64        `json:"duplicates"`
	OutOfOrder     int64        `json:"out_of_order"`
	Undecodable    int64        `json:"undecodable"`
	ElapsedSeconds float64      `json:"elapsed_s"`
	Rate           float64      `json:"msgs_per_s"`
	DrainSeconds   float64      `json:"drain_wait_s"`
	DrainTimedOut  bool         `json:"drain_timed_out"`
	E2ELatency     *latencyJSON `json:"e2e_latency,omitempty"`
}

// writeText prints the report as a few aligned lines.
func (r *report) writeText(w io.Writer) {
	line := func(label, format string, args ...any) {
		fmt.Fprintf(w, "%-13s "+format+"\n", append([]any{label}, args...)...)
	}
	if r.PayloadBytes > 0 {
		line("broker", "%s  mode %s  payload %d B", r.Config.Broker, r.Mode, r.PayloadBytes)
	} else {
		line("broker", "%s  mode %s", r.Config.Broker, r.Mode)
	}
	if p := r.Publish; p != nil {
		rateCap := ""
		if p.RateLimit > 0 {
			rateCap = fmt.Sprintf(", rate cap %.0f msgs/s", p.RateLimit)
		}
		line("publish", "%d publisher(s) x %d msgs, qos %d, inflight %d%s, server receive-max %d",
			p.Publishers, p.Messages, p.QoS, p.Inflight, rateCap, p.ServerRecvMax)
		line("  messages", "planned %d  sent %d  acked %d  errors %d", p.Planned, p.Sent, p.Acked, p.Errors)
		last := "last ack"
		if p.QoS == 0 {
			last = "last publish written" // QoS 0 has no ack: "acked" counts successful writes
		}
		line("  throughput", "%.0f msgs/s  (%s first publish to %s)", p.Rate, fmtDur(r.pubElapsed), last)
		if p.QoS > 0 {
			line("  ack latency", "%s", r.ackLat)
		}
	}
	if s := r.Subscribe; s != nil {
		line("subscribe", "%d subscriber(s) on %s, qos %d (granted %d)", s.Subscribers, s.Filter, s.QoS, s.GrantedQoS)
		line("  received", "min %d  max %d  (expected %d each)", s.ReceivedMin, s.ReceivedMax, s.Expected)
		line("  integrity", "missing %d  duplicates %d  out-of-order %d  undecodable %d",
			s.Missing, s.Duplicates, s.OutOfOrder, s.Undecodable)
		drain := fmt.Sprintf("drain wait after publishing %s", fmtDur(r.drain))
		if r.Publish == nil {
			drain = fmt.Sprintf("waited %s", fmtDur(r.drain))
		}
		if s.DrainTimedOut {
			drain += " (timed out)"
		}
		line("  throughput", "%.0f msgs/s  (%s first to last receive, all subscribers; %s)", s.Rate, fmtDur(r.subElapsed), drain)
		line("  e2e latency", "%s", r.e2e)
	}
	if m := r.RSS; m != nil {
		line("rss", "pid %d  VmHWM %.1f MiB  max sampled VmRSS %.1f MiB  final VmRSS %.1f MiB  (%d samples)",
			m.PID, m.PeakHWMMiB, m.MaxSampledMiB, m.FinalRSSMiB, m.Samples)
		if m.Error != "" {
			line("", "rss error: %s", m.Error)
		}
	}
	for _, e := range r.ConnErrors {
		line("conn error", "%s", e)
	}
	for _, n := range r.Notes {
		line("note", "%s", n)
	}
	if r.OK {
		line("result", "OK")
	} else {
		line("result", "FAIL: %s", strings.Join(r.Failures, "; "))
	}
}
