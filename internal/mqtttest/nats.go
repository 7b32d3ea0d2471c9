package mqtttest

// A cluster of real nats-server processes (Debian's nats-server 2.9) on
// loopback, with JetStream and the MQTT gateway on every node: the
// clustered upstream a fleet of gateways bridges into.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/internal/testlog"
)

// NATSServerPath is where Debian's nats-server package installs NATS.
const NATSServerPath = "/usr/sbin/nats-server"

// NATSNode is one nats-server of a NATSCluster.
type NATSNode struct {
	Name                                        string // server_name: n1, n2, ...
	ClientPort, ClusterPort, MQTTPort, HTTPPort int
	Conf                                        string // the config file
	Logs                                        *testlog.Buffer

	base   string // the config as written first
	nudges int    // reloads by WaitPlacement
	cmd    *exec.Cmd
	done   chan struct{}
}

// MQTTAddr is the node's MQTT listener, host:port.
func (n *NATSNode) MQTTAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.MQTTPort) }

// NATSCluster is a JetStream cluster whose nodes also serve MQTT 3.1.1,
// with stream_replicas and consumer_replicas equal to its size: every
// MQTT session, subscription and QoS 1 message is kept on every node.
type NATSCluster struct {
	Nodes []*NATSNode
}

// NATSConfig writes the config of one node of a cluster: name is its
// server_name (n1, n2, ...), storeDir its JetStream directory, then its
// client, cluster, MQTT and monitoring ports, and routes the cluster
// ports of all the nodes, its own included.
type NATSConfig func(name, storeDir string, client, cluster, mqtt, http int, routes []int) string

// NATSClusterConfig is the NATSConfig of NewNATSCluster: every address on
// loopback, JetStream, and MQTT with stream_replicas and
// consumer_replicas equal to the cluster's size.
func NATSClusterConfig(name, storeDir string, client, cluster, mqtt, http int, routes []int) string {
	var rs []string
	for _, p := range routes {
		rs = append(rs, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	return fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: ralph-cloud
  listen: 127.0.0.1:%d
  routes: [%s]
}
mqtt {
  listen: 127.0.0.1:%d
  stream_replicas: %d
  consumer_replicas: %d
}
`, name, client, http, storeDir, cluster, strings.Join(rs, ", "), mqtt, len(routes), len(routes))
}

// StartNATSCluster is NewNATSCluster and Start.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	c := NewNATSCluster(t, n)
	c.Start(t)
	return c
}

// NewNATSCluster writes the configs of an n-node cluster on free loopback
// ports (its store directories in a temporary directory of the test) but
// starts nothing: the gateways of a test can be given its addresses
// before it exists. The nodes still running when the test ends are
// killed. It fails the test, with how to fix it, when nats-server is not
// installed.
func NewNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	return NewNATSClusterWith(t, n, NATSClusterConfig)
}

// NewNATSClusterWith is NewNATSCluster with the nodes' configs written by
// conf.
func NewNATSClusterWith(t testing.TB, n int, conf NATSConfig) *NATSCluster {
	t.Helper()
	if _, err := os.Stat(NATSServerPath); err != nil {
		t.Fatalf("this test needs nats-server at %s: apt-get install -y nats-server (%v)", NATSServerPath, err)
	}
	c := &NATSCluster{}
	var routes []int
	for i := range n {
		nd := &NATSNode{Name: fmt.Sprintf("n%d", i+1), ClientPort: FreePort(t), ClusterPort: FreePort(t),
			MQTTPort: FreePort(t), HTTPPort: FreePort(t), Logs: new(testlog.Buffer)}
		c.Nodes = append(c.Nodes, nd)
		routes = append(routes, nd.ClusterPort)
	}
	dir := t.TempDir()
	for _, nd := range c.Nodes {
		nd.Conf = filepath.Join(dir, nd.Name+".conf")
		nd.base = conf(nd.Name, filepath.Join(dir, nd.Name), nd.ClientPort, nd.ClusterPort, nd.MQTTPort, nd.HTTPPort, routes)
		if err := os.WriteFile(nd.Conf, []byte(nd.base), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			nd.Kill()
		}
		if t.Failed() {
			for _, nd := range c.Nodes {
				t.Logf("nats-server %s log (tail):\n%s", nd.Name, tail(nd.Logs.String(), 60))
			}
		}
	})
	return c
}

// Start starts every node not running and waits until each is healthy
// (routed, JetStream with a meta leader, its assets current) and the
// cluster can place a stream on all of its nodes.
func (c *NATSCluster) Start(t testing.TB) {
	t.Helper()
	for _, nd := range c.Nodes {
		if !nd.Running() {
			nd.start(t)
		}
	}
	c.WaitHealthy(t, 30*time.Second)
	c.WaitPlacement(t, 30*time.Second)
}

// WaitPlacement waits until a stream replicated on every running node
// can be created (it creates one and deletes it). A healthy nats-server
// 2.9 cluster may not be there yet: the meta leader places an asset only
// on the servers whose statistics it has received, which every server
// announces when it meets another, and again only every 30 s; an
// announcement sent while the routes are still forming can be lost
// (about one start in ten here), and the first MQTT client is then
// refused for half a minute ("create sessions stream: no suitable peers
// for placement"). So if placement fails for a second, every node is
// made to announce itself again: a reload with changed server_tags,
// which nats-server follows with an announcement.
func (c *NATSCluster) WaitPlacement(t testing.TB, timeout time.Duration) {
	t.Helper()
	var running []*NATSNode
	for _, nd := range c.Nodes {
		if nd.Running() {
			running = append(running, nd)
		}
	}
	if len(running) < 2 {
		return
	}
	cfg := fmt.Sprintf(`{"name":"ralph_probe","subjects":["ralph.probe"],"storage":"memory","num_replicas":%d}`, len(running))
	start := time.Now()
	deadline := start.Add(timeout)
	nudged := time.Time{}
	for {
		b, err := running[0].Request("$JS.API.STREAM.CREATE.ralph_probe", []byte(cfg), 5*time.Second)
		var resp struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if err == nil {
			if err = json.Unmarshal(b, &resp); err == nil && resp.Error != nil {
				err = fmt.Errorf("%s", resp.Error.Description)
			}
		}
		if err == nil {
			running[0].Request("$JS.API.STREAM.DELETE.ralph_probe", nil, 5*time.Second)
			if !nudged.IsZero() {
				t.Logf("NATS cluster: placement works %.1fs after it was healthy", time.Since(start).Seconds())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the NATS cluster cannot place a stream on its %d nodes after %v: %v", len(running), timeout, err)
		}
		if time.Since(start) > time.Second && time.Since(nudged) > 3*time.Second {
			t.Logf("NATS cluster: %v; every node reloads to announce itself again", err)
			for _, nd := range running {
				nd.nudge(t)
			}
			nudged = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nudge reloads the node's config with changed server_tags, after which
// nats-server announces its statistics to the cluster.
func (n *NATSNode) nudge(t testing.TB) {
	t.Helper()
	n.nudges++
	conf := n.base + fmt.Sprintf("server_tags: [\"start:%d\"]\n", n.nudges)
	if err := os.WriteFile(n.Conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n.cmd.Process.Signal(syscall.SIGHUP)
}

func (n *NATSNode) start(t testing.TB) {
	t.Helper()
	n.cmd = exec.Command(NATSServerPath, "-c", n.Conf)
	n.cmd.Stdout, n.cmd.Stderr = n.Logs, n.Logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func() { n.cmd.Wait(); close(n.done) }()
}

// Running says whether the node's process is alive.
func (n *NATSNode) Running() bool {
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the node's process (by its PID) and waits for it.
func (n *NATSNode) Kill() {
	if !n.Running() {
		return
	}
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

// Healthz is the node's /healthz answer: "" when healthy, else why not.
func (n *NATSNode) Healthz() string {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.HTTPPort))
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var h struct{ Status, Error string }
	if json.Unmarshal(b, &h) != nil || resp.StatusCode != 200 || h.Status != "ok" {
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	return ""
}

// WaitHealthy waits until every running node's /healthz says ok.
func (c *NATSCluster) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var bad []string
		for _, nd := range c.Nodes {
			if !nd.Running() {
				continue
			}
			if why := nd.Healthz(); why != "" {
				bad = append(bad, nd.Name+": "+why)
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("NATS cluster not healthy after %v: %s", timeout, strings.Join(bad, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// NodeByMQTT returns the node whose MQTT listener is addr (host:port, or
// a URL ending in it), or nil.
func (c *NATSCluster) NodeByMQTT(addr string) *NATSNode {
	for _, nd := range c.Nodes {
		if strings.HasSuffix(addr, ":"+strconv.Itoa(nd.MQTTPort)) {
			return nd
		}
	}
	return nil
}

// NATSStream is a JetStream stream as /jsz reports it, with its leader
// and consumers.
type NATSStream struct {
	Name     string
	Leader   string
	Messages uint64
	// Consumers: name → leader, filter subject and what awaits its ack.
	Consumers []NATSConsumer
}

// NATSConsumer is a consumer of a NATSStream.
type NATSConsumer struct {
	Name, Leader, Filter string
	AckPending           int
	Redelivered          int
}

// Streams reports the account $G's streams (where MQTT keeps sessions,
// messages and retained messages) as the node sees them.
func (n *NATSNode) Streams() ([]NATSStream, error) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz?accounts=true&streams=true&consumers=true&config=true", n.HTTPPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var jsz struct {
		Accounts []struct {
			Name    string `json:"name"`
			Streams []struct {
				Name    string `json:"name"`
				Cluster struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
				State struct {
					Messages uint64 `json:"messages"`
				} `json:"state"`
				Consumers []struct {
					Name   string `json:"name"`
					Config struct {
						Filter string `json:"filter_subject"`
					} `json:"config"`
					Cluster struct {
						Leader string `json:"leader"`
					} `json:"cluster"`
					AckPending  int `json:"num_ack_pending"`
					Redelivered int `json:"num_redelivered"`
				} `json:"consumer_detail"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		return nil, err
	}
	var out []NATSStream
	for _, a := range jsz.Accounts {
		if a.Name != "$G" {
			continue
		}
		for _, s := range a.Streams {
			st := NATSStream{Name: s.Name, Leader: s.Cluster.Leader, Messages: s.State.Messages}
			for _, cs := range s.Consumers {
				st.Consumers = append(st.Consumers, NATSConsumer{Name: cs.Name, Leader: cs.Cluster.Leader,
					Filter: cs.Config.Filter, AckPending: cs.AckPending, Redelivered: cs.Redelivered})
			}
			out = append(out, st)
		}
	}
	return out, nil
}

// Request sends a NATS request (core protocol, on the node's client
// port) and returns the reply's payload: e.g. a JetStream API call such
// as $JS.API.STREAM.LEADER.STEPDOWN.<stream>.
func (n *NATSNode) Request(subject string, data []byte, timeout time.Duration) ([]byte, error) {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.ClientPort), timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(conn)
	if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		return nil, fmt.Errorf("nats %s: no INFO (%q, %v)", n.Name, line, err)
	}
	const inbox = "_INBOX.ralphtest"
	if _, err := fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false}\r\nSUB %s 1\r\nPUB %s %s %d\r\n%s\r\nPING\r\n",
		inbox, subject, inbox, len(data), data); err != nil {
		return nil, err
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("nats %s: %s: %v", n.Name, subject, err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "PING":
			fmt.Fprint(conn, "PONG\r\n")
		case line == "PONG", line == "+OK":
		case strings.HasPrefix(line, "-ERR"):
			return nil, fmt.Errorf("nats %s: %s: %s", n.Name, subject, line)
		case strings.HasPrefix(line, "MSG "):
			f := strings.Fields(line)
			size, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return nil, fmt.Errorf("nats %s: bad MSG line %q", n.Name, line)
			}
			body := make([]byte, size+2)
			if _, err := io.ReadFull(r, body); err != nil {
				return nil, err
			}
			return body[:size], nil
		}
	}
}

// StepDown asks the leader of a stream (consumer "") or of one of its
// consumers to hand its leadership to another replica.
func (n *NATSNode) StepDown(stream, consumer string) error {
	subj := "$JS.API.STREAM.LEADER.STEPDOWN." + stream
	if consumer != "" {
		subj = "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + consumer
	}
	b, err := n.Request(subj, nil, 5*time.Second)
	if err != nil {
		return err
	}
	var resp struct {
		Success bool            `json:"success"`
		Error   json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(b, &resp); err != nil || !resp.Success {
		return fmt.Errorf("nats %s: %s: %s", n.Name, subj, b)
	}
	return nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
