package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ralph-gateway/ralph/bridge"
	"github.com/ralph-gateway/ralph/queue"
	"github.com/ralph-gateway/ralph/serialin"
)

// Status is the gateway's state as /status reports it and `ralph status`
// prints it.
type Status struct {
	Version   string            `json:"version"`
	Started   time.Time         `json:"started"`
	Listen    []string          `json:"listen"`
	Clients   int               `json:"clients"`
	Broker    BrokerStatus      `json:"broker"`
	Queue     QueueStatus       `json:"queue"`
	Storage   StorageStatus     `json:"storage"`
	Bridges   []BridgeStatus    `json:"bridges"`
	Serial    []serialin.Status `json:"serial,omitempty"`
	Healthy   bool              `json:"healthy"`
	Unhealthy []string          `json:"unhealthy,omitempty"`
}

// BrokerStatus counts what the local broker stored and refused.
type BrokerStatus struct {
	Stored      uint64 `json:"stored"`
	StoreFailed uint64 `json:"store_failed"`
	Orphaned    uint64 `json:"orphaned"`
	AuthFailed  uint64 `json:"auth_failed"`
	Denied      uint64 `json:"denied"`
	// DeliveriesDropped counts, by QoS (0, 1, 2), messages not delivered
	// to subscribers too far behind (localbroker.Stats).
	DeliveriesDropped [3]uint64 `json:"deliveries_dropped"`
}

// QueueStatus describes the durable queue.
type QueueStatus struct {
	Messages    uint64  `json:"messages"`
	Bytes       int64   `json:"bytes"`
	MaxBytes    int64   `json:"max_bytes"`
	OldestAge   float64 `json:"oldest_age_seconds"`
	Appended    uint64  `json:"appended"`
	Rejected    uint64  `json:"rejected"`
	DroppedFull uint64  `json:"dropped_full"`
	Expired     uint64  `json:"expired"`
	DiskLow     bool    `json:"disk_low"`
	LastError   string  `json:"last_error,omitempty"`
	// SetAside lists the databases set aside whole because they did not
	// open (the queue started empty); one not acknowledged makes the
	// gateway unhealthy.
	SetAside []queue.SetAside `json:"set_aside,omitempty"`
	// RecoveredFiles are the empty files a power cut left, which the last
	// start moved to lost+found (they held nothing synced): information.
	RecoveredFiles []string `json:"recovered_files,omitempty"`
}

// BridgeStatus describes one bridge.
type BridgeStatus struct {
	Name       string    `json:"name"`
	Connected  bool      `json:"connected"`
	URL        string    `json:"url,omitempty"`
	Since      time.Time `json:"since"`
	LastError  string    `json:"last_error,omitempty"`
	Queued     uint64    `json:"queued"`
	Inflight   int       `json:"inflight"`
	Forwarded  uint64    `json:"forwarded"`
	Dropped    uint64    `json:"dropped"`
	Rejected   uint64    `json:"rejected"`
	Expired    uint64    `json:"expired"`
	Reconnects uint64    `json:"reconnects"`
	Downlinked uint64    `json:"downlinked"`
	DeadLetter uint64    `json:"dead_lettered"`
	// DownlinkDeadLetter: downlink messages whose rewritten local topic is
	// invalid, put on the dead-letter topic instead.
	DownlinkDeadLetter uint64 `json:"downlink_dead_lettered"`
	// Protocol is the MQTT version spoken upstream ("5", "3.1.1");
	// PropertiesDropped the messages forwarded over MQTT 3.1.1 without
	// the MQTT 5 properties they carried.
	Protocol          string `json:"protocol"`
	PropertiesDropped uint64 `json:"properties_dropped"`
	// Backlog is the backlog per priority of its forward rules, the most
	// urgent first.
	Backlog []bridge.Backlog `json:"backlog"`
}

// Status gathers the gateway's current state.
func (g *Gateway) Status() Status {
	qs := g.q.Stats()
	bs := g.broker.Stats()
	st := Status{
		Version: g.version,
		Started: g.started,
		Listen:  g.broker.Addrs(),
		Clients: g.broker.ClientCount(),
		Broker: BrokerStatus{Stored: bs.Stored, StoreFailed: bs.StoreFailed, Orphaned: bs.Orphaned, AuthFailed: bs.AuthFailed, Denied: bs.Denied,
			DeliveriesDropped: bs.DeliveriesDropped},
		Queue: QueueStatus{
			Messages: qs.Head - qs.Oldest, Bytes: qs.Bytes, MaxBytes: int64(g.cfg.Queue.MaxBytes),
			Appended: qs.Appended, Rejected: qs.Rejected, DroppedFull: qs.DroppedFull, Expired: qs.Expired,
			DiskLow: qs.DiskLow, LastError: qs.LastError,
			RecoveredFiles: g.q.Recovery().Files,
		},
		Storage: g.wear.status(qs.Syncs, qs.Appended),
	}
	setAside, saErr := queue.SetAsides(g.dbDir)
	st.Queue.SetAside = setAside
	if msgs, err := g.q.Peek(1); err == nil && len(msgs) > 0 {
		st.Queue.OldestAge = time.Since(msgs[0].Arrived).Seconds()
	}
	g.mu.Lock()
	bridges := g.bridges
	g.mu.Unlock()
	for _, rb := range bridges {
		s := rb.b.Stats()
		st.Bridges = append(st.Bridges, BridgeStatus{
			Name: rb.cfg.Name, Connected: s.Connected, URL: s.URL, Since: s.Since, LastError: s.LastError,
			Queued: s.Backlog, Inflight: s.Inflight, Forwarded: s.Forwarded, Dropped: rb.dropped(),
			Rejected: s.Rejected, Expired: s.Expired, Reconnects: s.Reconnects, Downlinked: s.Downlinked, DeadLetter: s.DeadLetter,
			DownlinkDeadLetter: s.DownlinkDeadLetter, Protocol: rb.cfg.Protocol, PropertiesDropped: s.PropertiesDropped,
			Backlog: bridge.Backlogs(s.Lanes, time.Now()),
		})
	}
	g.mu.Lock()
	ports := g.ports
	g.mu.Unlock()
	for _, rp := range ports {
		st.Serial = append(st.Serial, rp.p.Status())
	}
	st.Unhealthy = g.unhealthyWith(setAside, saErr)
	st.Healthy = len(st.Unhealthy) == 0
	return st
}

// unhealthy lists why the gateway cannot do its job, if it cannot: the
// broker must accept connections, the queue must be able to store, and no
// database set aside (with messages not forwarded) may go unnoticed.
func (g *Gateway) unhealthy() []string {
	return g.unhealthyWith(queue.SetAsides(g.dbDir))
}

func (g *Gateway) unhealthyWith(setAside []queue.SetAside, setAsideErr error) []string {
	var why []string
	for _, l := range g.broker.NotServing() {
		why = append(why, "broker not accepting connections on "+l)
	}
	qs := g.q.Stats()
	if qs.DiskLow && !qs.DiskUnknown { // else LastError says why
		why = append(why, fmt.Sprintf("disk nearly full: less than min_free (%s) free on %s", g.cfg.Queue.MinFree, g.cfg.DataDir))
	}
	if qs.LastError != "" {
		why = append(why, "queue cannot store messages: "+qs.LastError)
	}
	if setAsideErr != nil {
		why = append(why, "cannot list the databases set aside: "+setAsideErr.Error())
	}
	for _, sa := range setAside {
		if !sa.Acknowledged {
			why = append(why, fmt.Sprintf("queue database set aside at %s (%s): the queue started empty and its messages are not forwarded; "+
				"read them with `ralph queue peek --dir %s`, then run `ralph queue acknowledge`", sa.Path, orUnknown(sa.Reason), sa.Path))
		}
	}
	return why
}

func orUnknown(s string) string {
	if s == "" {
		return "reason unknown"
	}
	return s
}

// PeekedMessage is a queued message as /queue/peek shows it.
type PeekedMessage struct {
	Seq     uint64    `json:"seq"`
	Topic   string    `json:"topic"`
	QoS     byte      `json:"qos"`
	Retain  bool      `json:"retain,omitempty"`
	Origin  string    `json:"origin"`
	Arrived time.Time `json:"arrived"`
	Payload string    `json:"payload"`          // as text when it is UTF-8
	Base64  []byte    `json:"base64,omitempty"` // otherwise
}

// Peeked converts queued messages for display.
func Peeked(msgs []*queue.Message) []PeekedMessage {
	out := []PeekedMessage{}
	for _, m := range msgs {
		p := PeekedMessage{Seq: m.Seq, Topic: m.Topic, QoS: m.QoS, Retain: m.Retain, Origin: m.Origin, Arrived: m.Arrived}
		if utf8.Valid(m.Payload) {
			p.Payload = string(m.Payload)
		} else {
			p.Base64 = m.Payload
		}
		out = append(out, p)
	}
	return out
}

// serveHTTP runs the HTTP endpoint until ctx is done.
func (g *Gateway) serveHTTP(ctx context.Context, l net.Listener) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&metrics{g: g},
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		why := g.unhealthy()
		if len(why) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unhealthy", "reasons": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, g.Status())
	})
	mux.HandleFunc("GET /queue/peek", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 1 || n > 10000 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "n must be a number from 1 to 10000"})
			return
		}
		msgs, err := g.q.Peek(n)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		out := Peeked(msgs)
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /queue/purge", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("bridge")
		g.mu.Lock()
		bridges := g.bridges
		g.mu.Unlock()
		for _, rb := range bridges {
			if rb.cfg.Name == name {
				n := rb.purge()
				g.log.Warn("queue purged for a bridge", "bridge", name, "messages", n)
				writeJSON(w, http.StatusOK, map[string]uint64{"purged": n})
				return
			}
		}
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no bridge named %q", name)})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelWarn)}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		g.log.Error("http endpoint stopped", "err", err)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// metrics exposes the gateway's counters to Prometheus, read from the
// packages' own statistics at each scrape: no second set of counters.
type metrics struct{ g *Gateway }

func (m *metrics) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(m, ch) }

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.g.Status()
	qs := m.g.q.Stats()
	counter := func(name, help string, v float64, labels ...string) {
		emit(ch, prometheus.CounterValue, name, help, v, labels...)
	}
	gauge := func(name, help string, v float64, labels ...string) {
		emit(ch, prometheus.GaugeValue, name, help, v, labels...)
	}
	gauge("ralph_clients_connected", "MQTT clients connected to the local broker.", float64(st.Clients))
	counter("ralph_broker_stored_total", "Publishes stored in the queue.", float64(st.Broker.Stored))
	counter("ralph_broker_store_failed_total", "Publishes that could not be stored (refused).", float64(st.Broker.StoreFailed))
	counter("ralph_broker_auth_failed_total", "Connections refused: bad credentials, or anonymous where not allowed.", float64(st.Broker.AuthFailed))
	counter("ralph_broker_denied_total", "Publishes refused by the ACL.", float64(st.Broker.Denied))
	for qos, n := range st.Broker.DeliveriesDropped {
		counter("ralph_broker_deliveries_dropped_total", "Messages not delivered to a subscriber too far behind to take them: its socket took nothing for a second (QoS 0), or more were pending or held back by its Receive Maximum for it than the broker keeps.", float64(n), "qos", strconv.Itoa(qos))
	}
	counter("ralph_queue_appended_total", "Messages appended to the queue.", float64(qs.Appended))
	counter("ralph_queue_commits_total", "Group commits that stored messages.", float64(qs.Commits))
	counter("ralph_queue_syncs_total", "Sync calls (fsyncs) of the queue.", float64(st.Storage.Syncs))
	counter("ralph_queue_sync_rounds_total", "Times the queue made its writes durable (one or a few sync calls each; at most max_syncs_per_second a second under a paced load).", float64(qs.SyncRounds))
	counter("ralph_queue_unreadable_total", "Stored records skipped because they could not be read: messages a power cut left half-written (never acknowledged), and session state.", float64(qs.Corrupt))
	counter("ralph_queue_deleted_total", "Messages deleted after every bridge had them.", float64(qs.Deleted))
	counter("ralph_queue_dropped_total", "Messages deleted before every bridge had them.", float64(qs.DroppedFull), "reason", "full")
	counter("ralph_queue_dropped_total", "Messages deleted before every bridge had them.", float64(qs.Expired), "reason", "max_age")
	counter("ralph_queue_rejected_total", "Appends refused: queue or disk full.", float64(qs.Rejected))
	gauge("ralph_queue_messages", "Messages stored in the queue.", float64(st.Queue.Messages))
	gauge("ralph_queue_bytes", "Bytes of messages stored in the queue.", float64(qs.Bytes))
	gauge("ralph_queue_max_bytes", "The queue's disk budget (0: none).", float64(st.Queue.MaxBytes))
	gauge("ralph_queue_oldest_age_seconds", "Age of the oldest stored message.", st.Queue.OldestAge)
	gauge("ralph_queue_disk_low", "1 while free disk space is under min_free.", b2f(qs.DiskLow))
	unacked := 0
	for _, sa := range st.Queue.SetAside {
		if !sa.Acknowledged {
			unacked++
		}
	}
	gauge("ralph_queue_set_aside_databases", "Databases set aside because they did not open, not yet acknowledged (ralph queue acknowledge).", float64(unacked))
	if w := st.Storage.WrittenBytes; w != nil {
		counter("ralph_storage_written_bytes_total", "Bytes Ralph caused to be written to storage (write_bytes of /proc/self/io).", float64(*w))
	}
	if b := st.Storage.BytesPerMessage; b != nil {
		gauge("ralph_storage_bytes_per_message", "Bytes written to storage per message appended, since start.", *b)
	}
	if d := st.Storage.ProjectedBytesPerDay; d != nil {
		gauge("ralph_storage_projected_bytes_per_day", "Bytes a day written to storage at the rate of the last 5 minutes.", *d)
	}
	gauge("ralph_healthy", "1 when /healthz reports ok.", b2f(st.Healthy))
	for _, b := range st.Bridges {
		gauge("ralph_bridge_connected", "1 while the bridge is connected upstream.", b2f(b.Connected), "bridge", b.Name)
		gauge("ralph_bridge_queued", "Messages waiting for the bridge.", float64(b.Queued), "bridge", b.Name)
		gauge("ralph_bridge_inflight", "Messages sent upstream, awaiting acknowledgement.", float64(b.Inflight), "bridge", b.Name)
		counter("ralph_bridge_forwarded_total", "Messages acknowledged by the upstream.", float64(b.Forwarded), "bridge", b.Name)
		counter("ralph_bridge_dropped_total", "Messages deleted before the bridge forwarded them.", float64(b.Dropped), "bridge", b.Name)
		counter("ralph_bridge_rejected_total", "Messages the upstream refused.", float64(b.Rejected), "bridge", b.Name)
		counter("ralph_bridge_expired_total", "Messages whose MQTT expiry passed before forwarding.", float64(b.Expired), "bridge", b.Name)
		counter("ralph_bridge_reconnects_total", "Upstream connections lost.", float64(b.Reconnects), "bridge", b.Name)
		counter("ralph_bridge_dead_lettered_total", "Messages too large for the upstream, moved to the dead-letter topic.", float64(b.DeadLetter), "bridge", b.Name)
		counter("ralph_bridge_downlink_dead_lettered_total", "Messages from the upstream whose rewritten local topic is invalid, moved to the dead-letter topic.", float64(b.DownlinkDeadLetter), "bridge", b.Name)
		counter("ralph_bridge_properties_dropped_total", "Messages forwarded over MQTT 3.1.1 without the MQTT 5 properties they carried.", float64(b.PropertiesDropped), "bridge", b.Name)
		counter("ralph_bridge_downlinked_total", "Messages received from the upstream and published locally.", float64(b.Downlinked), "bridge", b.Name)
		for _, l := range b.Backlog {
			prio := strconv.Itoa(l.Priority)
			gauge("ralph_bridge_backlog_messages", "Messages the bridge's forward rules of this priority selected, not yet forwarded.", float64(l.Messages), "bridge", b.Name, "priority", prio)
			gauge("ralph_bridge_backlog_bytes", "Bytes (topics and payloads) of those messages.", float64(l.Bytes), "bridge", b.Name, "priority", prio)
			gauge("ralph_bridge_backlog_oldest_age_seconds", "Age of the oldest of those messages (0 with none).", l.OldestAge, "bridge", b.Name, "priority", prio)
			gauge("ralph_bridge_drain_rate", "Messages of this priority forwarded a second, lately.", l.DrainRate, "bridge", b.Name, "priority", prio)
			if l.ETA != nil {
				gauge("ralph_bridge_backlog_eta_seconds", "Time to forward those messages at the drain rate (absent with no rate to go by).", *l.ETA, "bridge", b.Name, "priority", prio)
			}
		}
	}
	for _, sp := range st.Serial {
		c, port := sp.Counters, sp.Name
		gauge("ralph_serial_present", "1 while the port's device is open.", b2f(sp.Present), "port", port)
		gauge("ralph_serial_online", "1 while the board has been heard recently.", b2f(sp.Online), "port", port)
		for _, f := range []struct {
			result string
			v      uint64
		}{{"ok", c.FramesOK}, {"bad_checksum", c.BadChecksum}, {"malformed", c.Malformed}, {"oversize", c.Oversize}} {
			counter("ralph_serial_frames_total", "Frames from the board, by outcome.", float64(f.v), "port", port, "result", f.result)
		}
		for reason, n := range c.NAKs {
			counter("ralph_serial_naks_total", "Publishes and subscriptions refused, by reason.", float64(n), "port", port, "reason", reason)
		}
		counter("ralph_serial_log_lines_total", "Board log lines (not frames).", float64(c.LogLines), "port", port)
		counter("ralph_serial_duplicates_total", "Resent publishes acknowledged without storing them again.", float64(c.Duplicates), "port", port)
		counter("ralph_serial_published_total", "Publishes from the board stored.", float64(c.Published), "port", port)
		counter("ralph_serial_delivered_total", "Messages delivered to the board.", float64(c.Delivered), "port", port)
		counter("ralph_serial_resent_total", "Messages sent to the board again for want of an ACK.", float64(c.Resent), "port", port)
		counter("ralph_serial_too_long_total", "Messages too long for the board's line, dropped.", float64(c.TooLong), "port", port)
	}
}

func emit(ch chan<- prometheus.Metric, t prometheus.ValueType, name, help string, v float64, labels ...string) {
	var keys, values []string
	for i := 0; i+1 < len(labels); i += 2 {
		keys, values = append(keys, labels[i]), append(values, labels[i+1])
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, help, keys, nil), t, v, values...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
