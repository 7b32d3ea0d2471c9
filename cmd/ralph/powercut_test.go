package main

// Power cuts: a real ralph whose data dir is on LazyFS (internal/powercut),
// which drops every write not yet fsynced when the test cuts the power.
// Devices publish QoS 1 while the upstream is down; the power is cut at the
// moments that matter (first start, memtable, table and value-log files
// appearing, backlog drain, shutdown) and at random ones. After each cut
// ralph must start again; at the end every acknowledged message must reach
// the upstream, in order per publisher.

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/internal/mqtttest"
	"github.com/ralph-gateway/ralph/internal/powercut"
	"github.com/ralph-gateway/ralph/internal/testlog"
)

const (
	cutDevices = 5
	cutWindow  = 32 // the bridge's max_inflight
)

// A load is what the devices publish during a round.
type load struct {
	name     string
	size     int    // payload bytes
	inflight int    // unacknowledged publishes per device
	queue    string // [queue] keys for the round, on top of the rig's
}

// The loads. The queue writes each group commit as one Badger entry: in
// the memtable log when it is small, in the value log when it is large.
// Under load, with paced fsyncs, commits are few and large.
var (
	smallLoad = load{name: "small", size: 100, inflight: 32}
	largeLoad = load{name: "large", size: 2000, inflight: 32}
	// The value log rotates every 32 MiB: big payloads get there sooner.
	vlogLoad = load{name: "8 kB", size: 8000, inflight: 32}
	// Many small commits, unpaced, one message per device each: what
	// fills a memtable fastest, to reach its rotation within seconds.
	commitsLoad = load{name: "small commits", size: 100, inflight: 1, queue: "max_syncs_per_second = 0\n"}
)

// TestPowerCut cuts the power under ralph (default durability) at each of
// cutMoments, then RALPH_POWERCUTS (default 12) times at random moments
// of ingest or drain, and checks that ralph always starts again and
// nothing acknowledged is lost.
func TestPowerCut(t *testing.T) {
	n := 12
	if s := os.Getenv("RALPH_POWERCUTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 0 {
			t.Fatalf("RALPH_POWERCUTS=%q: want a number of random cuts", s)
		}
	}
	r := newCutRig(t, "")
	for _, m := range cutMoments {
		m(r)
	}
	for range n {
		d := time.Duration(50+rand.IntN(1500)) * time.Millisecond
		k := rand.IntN(5) // one in five during drain
		if k == 0 {
			r.drainCut(d)
			continue
		}
		l := []load{smallLoad, largeLoad}[k%2]
		r.ingestCut(fmt.Sprintf("random, %s payloads, after %v", l.name, d), l, func(map[string]bool) { time.Sleep(d) })
	}
	missing, dups := r.finish()
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged messages lost after %d power cuts:\n%s", len(missing), len(r.want), len(r.cuts), r.explain(missing))
	}
	// A cut while the bridge drains makes it resend what it forwarded
	// since its cursor was last synced; never more than it forwarded in
	// that round, or a synced cursor was lost.
	if dups > r.drained {
		t.Fatalf("%d duplicates after %d cuts during drain, which forwarded %d messages before the cuts", dups, r.drainCuts, r.drained)
	}
	t.Logf("%d power cuts, %d messages acknowledged, none lost; %d duplicates after %d cuts during drain (%d forwarded in those rounds)",
		len(r.cuts), len(r.want), dups, r.drainCuts, r.drained)
}

// TestPowerCutCatchesLoss is the negative control: a queue that
// acknowledges before its fsync (durability = "interval", synced every
// 10 s) must lose acknowledged messages in the same harness. If it does
// not, the cuts do not drop unsynced writes and TestPowerCut proves
// nothing.
func TestPowerCutCatchesLoss(t *testing.T) {
	r := newCutRig(t, "durability = \"interval\"\nsync_interval = \"10s\"\n")
	for _, d := range []time.Duration{300 * time.Millisecond, 800 * time.Millisecond} {
		r.ingestCut(fmt.Sprintf("after %v", d), smallLoad, func(map[string]bool) { time.Sleep(d) })
	}
	missing, _ := r.finish()
	if len(missing) == 0 {
		t.Fatalf("no acknowledged message lost in %d cuts with durability = \"interval\" and a 10 s sync interval: the cuts do not drop unsynced writes", len(r.cuts))
	}
	t.Logf("the harness caught the loss: %d of %d acknowledged messages lost:\n%s", len(missing), len(r.want), r.explain(missing))
}

// cutMoments are the moments that matter, in the order TestPowerCut
// visits them: first starts (each on an empty data dir, before any
// message, so that wiping it loses nothing), then files appearing under
// load, backlog drain and shutdown.
var cutMoments = []func(r *cutRig){
	func(r *cutRig) {
		for _, d := range []time.Duration{0, 2 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
			r.firstStartCut(d)
		}
	},
	func(r *cutRig) {
		for _, f := range []struct {
			ext string
			l   load
			d   time.Duration
		}{
			{".mem", commitsLoad, 2 * time.Millisecond}, // memtable rotation
			{".sst", commitsLoad, 0},                    // a memtable flushed to a table
			{".vlog", vlogLoad, 0},                      // value-log rotation
			{".vlog", vlogLoad, 3 * time.Millisecond},
		} {
			r.ingestCut(fmt.Sprintf("new %s file, %v later", f.ext, f.d), f.l, r.newFile(f.ext, f.d))
		}
	},
	func(r *cutRig) {
		for range 2 {
			r.ingestCut("backlog so far", smallLoad, func(map[string]bool) { time.Sleep(time.Second) })
			r.drainCut(time.Duration(rand.IntN(300)) * time.Millisecond)
		}
	},
	func(r *cutRig) {
		for _, d := range []time.Duration{0, 5 * time.Millisecond, 20 * time.Millisecond, 100 * time.Millisecond} {
			r.shutdownCut(d)
		}
	},
}

// cutRig is ralph on a LazyFS data dir with a Mosquitto upstream, and the
// record of every message acknowledged across its cuts.
type cutRig struct {
	t        *testing.T
	fs       *powercut.FS
	up       *mosquittoUp
	s        setup
	config   string // the config file's text, with an empty [queue] line to add to
	data, db string
	p        *proc
	want     []string // keys of the payloads acknowledged so far (payloadKey)
	cuts     []string // what each cut was; payloads carry its index
	last     time.Time
	stopping atomic.Bool // ralph is being stopped: devices may fail

	drainCuts, drained int // cuts during drain, messages forwarded in those rounds
}

// newCutRig sets up the rig; queueKeys go into the config's [queue].
func newCutRig(t *testing.T, queueKeys string) *cutRig {
	fs := powercut.Mount(t)
	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), fmt.Sprintf("max_inflight = %d", cutWindow))
	r := &cutRig{t: t, fs: fs, up: up, s: s, data: filepath.Join(fs.Dir(), "data"), last: time.Now()}
	r.db = filepath.Join(r.data, "db")
	// LazyFS reports no free space; and every acknowledged message is
	// counted, so no budget may drop any.
	appendQueue(t, s, "min_free = \"0\"\nmax_bytes = \"0\"\n"+queueKeys)
	b, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	r.config = strings.Replace(string(b), filepath.Join(s.dir, "data"), r.data, 1)
	t.Cleanup(func() {
		if t.Failed() && r.p != nil {
			t.Logf("log of the last ralph (after %d cuts):\n%s", len(r.cuts), r.p.logs)
		}
	})
	return r
}

// spawn writes the config, with queueKeys added to [queue], and starts
// ralph without waiting for it. Unlike startRalph's, its cleanup does not
// print the log: the rig prints the last one only.
func (r *cutRig) spawn(queueKeys string) *proc {
	r.t.Helper()
	cfg := strings.Replace(r.config, "[queue]\n", "[queue]\n"+queueKeys, 1)
	if err := os.WriteFile(r.s.config, []byte(cfg), 0o644); err != nil {
		r.t.Fatal(err)
	}
	p := &proc{t: r.t, logs: new(testlog.Buffer), done: make(chan struct{})}
	p.cmd = exec.Command(ralphBin, "run", "--config", r.s.config)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	r.t.Cleanup(func() { p.cmd.Process.Kill(); <-p.done; noRaces(r.t, p.logs.String()) })
	r.p = p
	return p
}

// start starts ralph and waits until it accepts MQTT connections and says
// it runs (its signal handlers are installed by then): after any cut, it
// must. LazyFS dying meanwhile is one more cut (see powercut.FS.Cut), after
// which ralph must start too.
func (r *cutRig) start(queueKeys string) {
	r.t.Helper()
	for !r.tryStart(queueKeys) {
		r.kill()
		r.cut("LazyFS died while ralph started")
	}
}

// tryStart is start's one attempt; false if LazyFS died meanwhile.
func (r *cutRig) tryStart(queueKeys string) bool {
	r.t.Helper()
	p := r.spawn(queueKeys)
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.done:
			if r.fs.Err() != nil {
				return false
			}
			r.t.Fatalf("after %d cuts (the last: %s), ralph did not start: %v\n%s", len(r.cuts), r.lastCut(), p.cmd.ProcessState, p.logs)
		default:
		}
		if strings.Contains(p.logs.String(), "ralph is running") {
			c, err := net.Dial("tcp", r.s.addr)
			if err == nil {
				c.Close()
				return true
			}
		}
		if time.Now().After(deadline) {
			if r.fs.Err() != nil {
				return false
			}
			r.t.Fatalf("after %d cuts (the last: %s), ralph did not listen within 20 s:\n%s", len(r.cuts), r.lastCut(), p.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *cutRig) lastCut() string {
	if len(r.cuts) == 0 {
		return "none"
	}
	return r.cuts[len(r.cuts)-1]
}

// kill kills ralph (SIGKILL), as a power cut would.
func (r *cutRig) kill() {
	r.stopping.Store(true)
	r.p.kill()
}

// cut records the cut and cuts the power; ralph must be dead.
func (r *cutRig) cut(what string) {
	r.t.Helper()
	if r.fs.Err() != nil {
		what += ", LazyFS having died first"
	}
	t0 := time.Now()
	r.fs.Cut()
	r.cuts = append(r.cuts, what)
	r.t.Logf("cut %d (%s): %d acknowledged so far; round %v, cut %v", len(r.cuts), what, len(r.want),
		t0.Sub(r.last).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	r.last = time.Now()
}

// publish starts the devices: each publishes numbered QoS 1 messages on
// its own connection until ralph goes away. The returned function waits
// for them and adds what was acknowledged to r.want. A device that stops
// before r.stopping is set fails the test, unless LazyFS died.
func (r *cutRig) publish(l load) (wait func()) {
	r.t.Helper()
	r.stopping.Store(false)
	pad := strings.Repeat("x", l.size)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var conns []*mqtttest.Raw
	// If the test fails meanwhile, the devices must be gone before it
	// ends.
	r.t.Cleanup(func() {
		r.stopping.Store(true)
		for _, c := range conns {
			c.Close()
		}
		wg.Wait()
	})
	for i := range cutDevices {
		c := mqtttest.Dial(r.t, r.s.addr, fmt.Sprintf("dev%d", i), byte(4+i%2))
		conns = append(conns, c)
		// Payload: device-cut-sequence-padding, so that payloads sort in
		// publish order per device and name the cut they preceded.
		prefix := fmt.Sprintf("d%d-%04d-", i, len(r.cuts))
		// (Keys are what the test keeps: a long run acknowledges millions.)
		wg.Go(func() {
			const batch = 500
			for seq := 0; ; seq += batch {
				ps := make([]string, batch)
				for j := range ps {
					ps[j] = fmt.Sprintf("%s%06d-%s", prefix, seq+j, pad)
				}
				acked, err := c.PublishAll("sensors/a", 1, ps, l.inflight)
				mu.Lock()
				for _, a := range acked {
					r.want = append(r.want, payloadKey(a))
				}
				mu.Unlock()
				if err != nil {
					if !r.stopping.Load() && r.fs.Err() == nil {
						r.t.Errorf("device %d stopped while ralph was running: %v", i, err)
					}
					return
				}
			}
		})
	}
	return wg.Wait
}

// ingestCut starts ralph and the devices, waits for when (given the
// database's files at start), then kills ralph and cuts the power.
func (r *cutRig) ingestCut(what string, l load, when func(before map[string]bool)) {
	r.t.Helper()
	r.start(l.queue)
	before := r.files()
	wait := r.publish(l)
	when(before)
	r.kill()
	wait()
	r.cut(what)
}

// newFile returns a moment for ingestCut: d after a file with extension
// ext appears in the database, or LazyFS dies.
func (r *cutRig) newFile(ext string, d time.Duration) func(map[string]bool) {
	return func(before map[string]bool) {
		r.t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for r.fs.Err() == nil {
			for name := range r.files() {
				if strings.HasSuffix(name, ext) && !before[name] {
					time.Sleep(d)
					return
				}
			}
			if r.t.Failed() {
				r.t.FailNow()
			}
			if time.Now().After(deadline) {
				r.t.Fatalf("no new %s file in %s within 60 s of publishing (if the storage layout changed, change the load so that the moment comes); files: %v",
					ext, r.db, slices.Sorted(maps.Keys(r.files())))
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// files lists the database directory; none once LazyFS died.
func (r *cutRig) files() map[string]bool {
	r.t.Helper()
	es, err := os.ReadDir(r.db)
	if err != nil && !os.IsNotExist(err) && r.fs.Err() == nil {
		r.t.Fatal(err)
	}
	names := make(map[string]bool, len(es))
	for _, e := range es {
		names[e.Name()] = true
	}
	return names
}

// firstStartCut empties the data dir, starts ralph and cuts the power d
// after the database's first file appears. Ralph must then start.
func (r *cutRig) firstStartCut(d time.Duration) {
	r.t.Helper()
	if len(r.want) > 0 {
		r.t.Fatal("firstStartCut would wipe acknowledged messages")
	}
	if err := os.RemoveAll(r.data); err != nil {
		r.t.Fatal(err)
	}
	p := r.spawn("")
	deadline := time.Now().Add(20 * time.Second)
	for len(r.files()) == 0 && r.fs.Err() == nil {
		select {
		case <-p.done:
			r.t.Fatalf("ralph exited on its first start: %v\n%s", p.cmd.ProcessState, p.logs)
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("ralph created nothing in %s within 20 s:\n%s", r.db, p.logs)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(d)
	r.kill()
	r.cut(fmt.Sprintf("first start, %v after the first file", d))
	r.start("")
	r.p.stop()
}

// drainCut starts ralph and the upstream, lets the bridge forward 1000
// messages (of the backlog, or live ones: the devices publish), and cuts
// the power d later.
func (r *cutRig) drainCut(d time.Duration) {
	r.t.Helper()
	r.start("")
	wait := r.publish(smallLoad)
	c := r.up.collector()
	from := len(c.Messages())
	r.up.start(r.t)
	deadline := time.Now().Add(60 * time.Second)
	for len(c.Messages()) < from+1000 && r.fs.Err() == nil {
		if r.t.Failed() {
			r.t.FailNow()
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the bridge forwarded %d messages within 60 s, want 1000", len(c.Messages())-from)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(d)
	r.kill()
	r.drained += len(c.Messages()) - from
	r.drainCuts++
	wait()
	r.up.stop()
	r.cut(fmt.Sprintf("drain, %v after 1000 forwarded", d))
}

// shutdownCut cuts the power d after ralph is asked to stop (SIGTERM)
// while devices publish.
func (r *cutRig) shutdownCut(d time.Duration) {
	r.t.Helper()
	r.start("")
	wait := r.publish(smallLoad)
	time.Sleep(300 * time.Millisecond)
	r.stopping.Store(true)
	r.p.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(d)
	r.kill()
	wait()
	r.cut(fmt.Sprintf("shutdown, %v after SIGTERM", d))
}

// finish starts ralph after the last cut, brings the upstream back and
// returns the acknowledged messages that never arrived and the number of
// duplicates. A marker published last tells when everything still queued
// has been forwarded: the queue is one FIFO and the bridge sends in order.
func (r *cutRig) finish() (missing []string, dups int) {
	r.t.Helper()
	r.start("")
	const marker = "zz-final"
	publish(r.t, r.s.addr, "marker", 5, "sensors/a", []string{marker})
	r.up.start(r.t)
	c := r.up.collector()
	// However long the backlog, the drain must keep moving.
	var got []mqtttest.Received
	for checked, moved := 0, time.Now(); ; {
		got = c.Messages()
		if slices.ContainsFunc(got[checked:], func(m mqtttest.Received) bool { return m.Payload == marker }) {
			break
		}
		if len(got) > checked {
			checked, moved = len(got), time.Now()
		}
		if r.fs.Err() != nil {
			// A cut during the drain: what was forwarded since may come twice.
			r.kill()
			r.drained += len(got)
			r.drainCuts++
			r.cut("LazyFS died during the last drain")
			r.start("")
			moved = time.Now()
			continue
		}
		if time.Since(moved) > 60*time.Second {
			_, status := httpGet(r.t, "http://"+r.s.httpAddr+"/status")
			r.t.Errorf("nothing arrived upstream for 60 s (%d messages so far), and not yet the marker published after the last cut; ralph's /status:\n%s", len(got), status)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.stop()
	keys := make([]mqtttest.Received, len(got))
	seen := make(map[string]bool, len(got))
	for i, m := range got {
		m.Payload = payloadKey(m.Payload)
		keys[i] = m
		seen[m.Payload] = true
	}
	for _, w := range r.want {
		if !seen[w] {
			missing = append(missing, w)
		}
	}
	if len(missing) == 0 && !r.t.Failed() {
		dups = verify(r.t, keys, append(r.want, marker), edgeTopic("a"))
	}
	return missing, dups
}

// stop stops ralph with SIGTERM and expects a clean exit. Unlike
// proc.stop, a failure does not end the test: what was lost is still to be
// counted.
func (r *cutRig) stop() {
	r.t.Helper()
	r.stopping.Store(true)
	r.p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.p.done:
		if code := r.p.cmd.ProcessState.ExitCode(); code != 0 {
			r.t.Errorf("ralph exited %d on SIGTERM (log below)", code)
		}
	case <-time.After(15 * time.Second):
		r.t.Errorf("ralph did not stop within 15 s of SIGTERM (log below)")
	}
}

// payloadKey is a payload without its padding: device-cut-sequence.
func payloadKey(p string) string {
	if strings.Count(p, "-") == 3 {
		return p[:strings.LastIndexByte(p, '-')]
	}
	return p
}

// explain says which cuts lost the missing messages.
func (r *cutRig) explain(missing []string) string {
	lost := make(map[int][]string)
	for _, m := range missing {
		// d<device>-<cut>-<seq>
		f := strings.Split(m, "-")
		i, _ := strconv.Atoi(f[1])
		lost[i] = append(lost[i], m)
	}
	var b strings.Builder
	for i, what := range r.cuts {
		if l := lost[i]; len(l) > 0 {
			fmt.Fprintf(&b, "  cut %d (%s): %d lost, e.g. %v\n", i+1, what, len(l), l[:min(3, len(l))])
		}
	}
	return b.String()
}
