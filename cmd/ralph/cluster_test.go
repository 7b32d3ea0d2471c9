package main

// Scale-out: where one gateway per site is not enough, Ralph's answer is
// a fleet of gateways into a clustered broker, never clustering of its
// own. Three real ralph processes bridge, over MQTT 3.1.1, into a real
// three-node nats-server cluster (JetStream, MQTT sessions and messages
// replicated on all three nodes), and the node they are connected to is
// killed while they drain their backlogs.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/ralph-gateway/ralph/gateway"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// readmeScaleOut returns the README's scale-out recipe: the config of the
// first NATS node and the gateways' [[bridge]].
func readmeScaleOut(t *testing.T) (nats, bridge string) {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "### Scale-out: a fleet of gateways into a NATS cluster\n")
	_, nats, ok2 := strings.Cut(section, "```\n")
	nats, rest, ok3 := strings.Cut(nats, "```\n")
	_, bridge, ok4 := strings.Cut(rest, "```toml\n")
	bridge, _, ok5 := strings.Cut(bridge, "```\n")
	if !ok || !ok2 || !ok3 || !ok4 || !ok5 {
		t.Fatal("README.md: the section Scale-out lacks its two blocks (the NATS node's config, then the ```toml [[bridge]])")
	}
	return nats, bridge
}

// replaceAll replaces each old with its new in s, failing the test if s
// lacks one: the README's recipe has changed under the test.
func replaceAll(t *testing.T, what, s string, oldNew ...string) string {
	t.Helper()
	for i := 0; i < len(oldNew); i += 2 {
		if !strings.Contains(s, oldNew[i]) {
			t.Fatalf("the README's %s has no %q:\n%s", what, oldNew[i], s)
		}
		s = strings.ReplaceAll(s, oldNew[i], oldNew[i+1])
	}
	return s
}

// readmeNATSConfig is the README's node config with loopback addresses,
// the test's ports and store directory.
func readmeNATSConfig(t *testing.T, template string) mqtttest.NATSConfig {
	return func(name, storeDir string, client, cluster, mqtt, http int, routes []int) string {
		loop := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
		return replaceAll(t, "NATS config", template,
			"server_name: n1", "server_name: "+name,
			"0.0.0.0:4222", loop(client),
			"127.0.0.1:8222", loop(http),
			`"/var/lib/nats"`, strconv.Quote(storeDir),
			"0.0.0.0:6222", loop(cluster),
			"nats1.example.net:6222", loop(routes[0]),
			"nats2.example.net:6222", loop(routes[1]),
			"nats3.example.net:6222", loop(routes[2]),
			"0.0.0.0:1883", loop(mqtt))
	}
}

// fleetSite is one gateway of the fleet: its config and its process.
type fleetSite struct {
	name string // site1, ...
	s    setup
	p    *proc
}

// newFleetSite writes the config of a gateway: the README's [[bridge]],
// its URLs the cluster's nodes, with quick reconnects.
func newFleetSite(t *testing.T, i int, cluster *mqtttest.NATSCluster, bridge string, window int) *fleetSite {
	t.Helper()
	dir := t.TempDir()
	f := &fleetSite{name: fmt.Sprintf("site%d", i)}
	f.s = setup{dir: dir, config: filepath.Join(dir, "ralph.toml"),
		addr:     fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t)),
		httpAddr: fmt.Sprintf("127.0.0.1:%d", mqtttest.FreePort(t))}
	var oldNew []string
	for k, n := range cluster.Nodes {
		oldNew = append(oldNew, fmt.Sprintf("nats%d.example.net:1883", k+1), n.MQTTAddr())
	}
	oldNew = append(oldNew, "site1", f.name,
		"  [[bridge.forward]]", fmt.Sprintf("max_inflight = %d\nreconnect_min = \"50ms\"\nreconnect_max = \"200ms\"\n  [[bridge.forward]]", window))
	cfg := fmt.Sprintf("data_dir = %q\n[broker]\nlisten = [%q]\n[http]\nlisten = %q\n", filepath.Join(dir, "data"), f.s.addr, f.s.httpAddr) +
		replaceAll(t, "[[bridge]]", bridge, oldNew...)
	if err := os.WriteFile(f.s.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// bridge returns the gateway's bridge status from /status (nil, nil when
// the gateway does not answer).
func (f *fleetSite) bridge() (*gateway.BridgeStatus, error) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + f.s.httpAddr + "/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st gateway.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, err
	}
	if len(st.Bridges) != 1 {
		return nil, fmt.Errorf("%d bridges in status", len(st.Bridges))
	}
	return &st.Bridges[0], nil
}

// waitBridges polls every site's bridge until cond holds for all of them.
func waitBridges(t *testing.T, sites []*fleetSite, what string, timeout time.Duration, cond func(*fleetSite, *gateway.BridgeStatus) bool) []*gateway.BridgeStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := make([]*gateway.BridgeStatus, len(sites))
		ok := true
		var last string
		for i, f := range sites {
			b, err := f.bridge()
			if err != nil || !cond(f, b) {
				ok = false
				last = fmt.Sprintf("%s: %+v %v", f.name, b, err)
				break
			}
			out[i] = b
		}
		if ok {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the bridges never showed %s; last: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionSubscriber connects an MQTT 3.1.1 client with a persistent
// session (CleanSession 0) to addr and subscribes at QoS 1, retrying
// until the node can create the session (its JetStream assets need a
// quorum). It records everything it receives and acknowledges it.
func sessionSubscriber(t *testing.T, addr, clientID, filter string) *collector311 {
	t.Helper()
	c := new(collector311)
	opts := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).
		SetDefaultPublishHandler(func(_ paho3.Client, m paho3.Message) {
			c.mu.Lock()
			c.msgs = append(c.msgs, mqtttest.Received{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos()})
			c.mu.Unlock()
		})
	deadline := time.Now().Add(30 * time.Second)
	for {
		cl := paho3.NewClient(opts)
		err := fmt.Errorf("timed out")
		if tok := cl.Connect(); tok.WaitTimeout(10 * time.Second) {
			err = tok.Error()
		}
		if err == nil {
			tok := cl.Subscribe(filter, 1, nil)
			if !tok.WaitTimeout(10 * time.Second) {
				err = fmt.Errorf("subscribe timed out")
			} else if err = tok.Error(); err == nil {
				if st, ok := tok.(*paho3.SubscribeToken); ok && st.Result()[filter] > 1 {
					err = fmt.Errorf("subscription refused (%#x)", st.Result()[filter])
				}
			}
			if err == nil {
				t.Cleanup(func() { cl.Disconnect(100) })
				return c
			}
			cl.Disconnect(0)
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber %s could not connect and subscribe to %s on %s: %v", clientID, filter, addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// arrangeLeaders makes the node doomed the leader of the stream of MQTT
// messages (the worst case: the bridges' node and the stream's leader
// die together) and moves the leaders of the subscriber's consumers off
// it, so that the test is about the bridges' failover and not also the
// consumer's: nats-server 2.9 resends what a lost consumer leader had
// delivered and not seen acknowledged only after ack_wait (30 s), behind
// later messages. (In 9 runs with the consumer's leader killed too,
// that never happened, and everything arrived in order.)
func arrangeLeaders(t *testing.T, view, doomed *mqtttest.NATSNode) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		streams, err := view.Streams()
		var msgs *mqtttest.NATSStream
		for i := range streams {
			if streams[i].Name == "$MQTT_msgs" {
				msgs = &streams[i]
			}
		}
		done := err == nil && msgs != nil && msgs.Leader == doomed.Name && len(msgs.Consumers) > 0
		if done {
			for _, c := range msgs.Consumers {
				if c.Leader == "" || c.Leader == doomed.Name {
					done = false
				}
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not arrange the leaders (stream on %s, consumers elsewhere): %+v %v", doomed.Name, msgs, err)
		}
		if msgs != nil && msgs.Leader != "" && msgs.Leader != doomed.Name {
			view.StepDown("$MQTT_msgs", "")
		}
		if msgs != nil {
			for _, c := range msgs.Consumers {
				if c.Leader == doomed.Name {
					view.StepDown("$MQTT_msgs", c.Name)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFleetIntoNATSCluster: three gateways, each with devices publishing
// QoS 1, bridge over MQTT 3.1.1 into a three-node nats-server cluster
// (JetStream, stream_replicas = consumer_replicas = 3), the three nodes
// their failover list: the README's scale-out recipe, on loopback. Their
// backlogs are built while the cluster does not exist; they are stopped
// while it forms and a subscriber with a persistent QoS 1 session on the
// third node subscribes, then started again. While the bridges drain,
// the node they are connected to (which also leads the stream of MQTT
// messages) is SIGKILLed: the bridges fail over to the next node, and
// every message a gateway acknowledged arrives, in order per publisher,
// with duplicates within one window (max_inflight) per lost connection.
func TestFleetIntoNATSCluster(t *testing.T) {
	const (
		nSites  = 3
		devices = 2    // per site, publishing the backlog
		backlog = 1500 // per device
		live    = 300  // per site, published by one more device during the drain
		window  = 32   // max_inflight of each bridge
	)
	began := time.Now()
	natsConf, bridgeConf := readmeScaleOut(t)
	cluster := mqtttest.NewNATSClusterWith(t, 3, readmeNATSConfig(t, natsConf))
	n1, n3 := cluster.Nodes[0], cluster.Nodes[2]
	var sites []*fleetSite
	for i := range nSites {
		sites = append(sites, newFleetSite(t, i+1, cluster, bridgeConf, window))
	}
	topicFor := func(p string) string {
		pub, _, _ := strings.Cut(p, "-") // s1d0
		return fmt.Sprintf("edge/site%s/sensors/%s", pub[1:2], pub)
	}

	// 1. The cluster does not exist yet: the gateways queue.
	var mu sync.Mutex
	var want []string
	var wg sync.WaitGroup
	for i, f := range sites {
		f.p = startRalph(t, f.s.config, f.s.addr)
		for d := range devices {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("s%dd%d", i+1, d)
				acked := publish(t, f.s.addr, name, byte(4+d%2), "sensors/"+name, payloads(name, 0, backlog))
				mu.Lock()
				want = append(want, acked...)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	for _, f := range sites {
		f.p.stop()
	}
	queued := len(want)
	tBacklog := time.Since(began)

	// 2. The cluster comes up, and the cloud's subscriber opens its
	// persistent session: nats-server keeps QoS 1 messages in a stream
	// with interest retention and a new subscription gets only new
	// messages, so what is forwarded before a subscription exists is
	// acknowledged and dropped. The gateways (stopped above, their
	// backlogs on disk) come back once it does.
	cluster.Start(t)
	sub := sessionSubscriber(t, n3.MQTTAddr(), "cloud-collector", "edge/#")
	arrangeLeaders(t, n3, n1)
	tCluster := time.Since(began)

	// 3. The gateways drain; one more device per site publishes
	// meanwhile.
	for i, f := range sites {
		f.p = startRalph(t, f.s.config, f.s.addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("s%dd%d", i+1, devices)
			acked := publish(t, f.s.addr, name, 4, "sensors/"+name, payloads(name, 0, live))
			mu.Lock()
			want = append(want, acked...)
			mu.Unlock()
		}()
	}
	perSite := devices * backlog
	before := waitBridges(t, sites, "every bridge connected to a node and two thirds of its backlog forwarded", 30*time.Second,
		func(_ *fleetSite, b *gateway.BridgeStatus) bool {
			return b.Connected && b.Forwarded >= uint64(perSite*2/3)
		})
	doomed := cluster.NodeByMQTT(before[0].URL)
	for i, b := range before {
		if cluster.NodeByMQTT(b.URL) != n1 {
			t.Fatalf("%s's bridge is connected to %s, want the first of its URLs (%s)", sites[i].name, b.URL, n1.MQTTAddr())
		}
		if b.Queued == 0 {
			t.Fatalf("%s's bridge drained its backlog before the kill: nothing tested (forwarded %d)", sites[i].name, b.Forwarded)
		}
	}

	// 4. Kill that node (SIGKILL by PID).
	doomed.Kill()
	tKill := time.Since(began)
	var forwardedAtKill []string
	sumAtKill := 0
	for i, b := range before {
		forwardedAtKill = append(forwardedAtKill, fmt.Sprintf("%s %d/%d", sites[i].name, b.Forwarded, b.Forwarded+b.Queued))
		sumAtKill += int(b.Forwarded)
	}
	waitBridges(t, sites, "every bridge on another node", 60*time.Second, func(_ *fleetSite, b *gateway.BridgeStatus) bool {
		return b.Connected && cluster.NodeByMQTT(b.URL) != doomed
	})
	tFailover := time.Since(began)
	wg.Wait()

	got := sub.waitAll(t, want, 90*time.Second)
	tArrived := time.Since(began)
	dups := verify(t, got, want, topicFor)
	after := waitBridges(t, sites, "every backlog forwarded", 30*time.Second, func(_ *fleetSite, b *gateway.BridgeStatus) bool {
		return b.Connected && b.Queued == 0 && b.Inflight == 0
	})

	// Duplicates per site: at most one window per connection the bridge
	// lost (the kill, and any the cluster closed while it elected new
	// leaders).
	seen := map[string]bool{}
	siteDups := make([]int, nSites)
	for _, m := range got {
		if seen[m.Payload] {
			siteDups[m.Payload[1]-'1']++
		}
		seen[m.Payload] = true
	}
	var report []string
	for i, b := range after {
		lost := max(int(b.Reconnects), 1)
		report = append(report, fmt.Sprintf("%s: %d duplicates, %d connections lost, now on %s", sites[i].name, siteDups[i], b.Reconnects, cluster.NodeByMQTT(b.URL).Name))
		if siteDups[i] > window*lost {
			t.Errorf("%s: %d duplicates after losing %d connections; want at most %d (max_inflight %d each)", sites[i].name, siteDups[i], b.Reconnects, window*lost, window)
		}
	}
	t.Logf("%d messages acknowledged by 3 gateways (%d queued while the cluster did not exist, %d published during the drain); killed %s (its MQTT port the bridges' first URL, leader of $MQTT_msgs) with forwarded/total %s; all %d arrived at the subscriber on %s, in order per publisher, %d duplicates; %s",
		len(want), queued, len(want)-queued, doomed.Name, strings.Join(forwardedAtKill, ", "), len(want), n3.Name, dups, strings.Join(report, "; "))
	t.Logf("timeline: backlog queued %.1fs, cluster up and subscribed %.1fs, kill %.1fs, bridges failed over %.1fs, everything arrived %.1fs; forwarded %.0f msgs/s before the kill (ralph's start included), %.0f msgs/s from the kill on",
		tBacklog.Seconds(), tCluster.Seconds(), tKill.Seconds(), tFailover.Seconds(), tArrived.Seconds(),
		float64(sumAtKill)/(tKill-tCluster).Seconds(), float64(len(want)-sumAtKill)/(tArrived-tKill).Seconds())
	for _, f := range sites {
		f.p.stop()
	}
}
