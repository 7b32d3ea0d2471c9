package bridge

import (
	"encoding/base64"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/ralph-gateway/ralph/internal/mqtttest"
)

// TestAzureSAS against the vector of the Azure CLI's IoT extension tests
// (azure-iot-cli-extension, TestSasTokenAuth.test_generate_sas_token).
func TestAzureSAS(t *testing.T) {
	key, err := base64.StdEncoding.DecodeString("+XLy+MVZ+aTeOnVzN2kLeB16O+kSxmz6g3rS6fAf6rw=")
	if err != nil {
		t.Fatal(err)
	}
	got := azureSAS("iot-hub-for-test.azure-devices.net/devices/iot-device-for-test", key, time.Unix(1471940363, 0))
	want := "SharedAccessSignature sr=iot-hub-for-test.azure-devices.net%2Fdevices%2Fiot-device-for-test&sig=SIumZ1ACqqPJZ2okHDlW9MSYKykEpqsQY3z6FMOICd4%3D&se=1471940363"
	if got != want {
		t.Errorf("azureSAS =\n%s\nwant\n%s", got, want)
	}
	user, pw, exp := AzureIoTHub("dev1", key, time.Hour)("hub.azure-devices.net", time.Unix(1000, 500))
	if user != "hub.azure-devices.net/dev1/?api-version=2021-04-12" || exp != time.Unix(4600, 0) ||
		string(pw) != azureSAS("hub.azure-devices.net/devices/dev1", key, time.Unix(4600, 0)) {
		t.Errorf("AzureIoTHub = %q, %q, %v", user, pw, exp)
	}
}

// sasHub is an upstream that authenticates like Azure IoT Hub: a device's
// username and SAS token, checked at each CONNECT, and a connection cut
// once its token expires.
type sasHub struct {
	mqtt.HookBase
	t      *testing.T
	srv    *mqtt.Server
	key    []byte
	device string

	mu      sync.Mutex
	tokens  map[string]bool      // accepted
	expires map[string]time.Time // by client, of the token it connected with
	refused []string
	kicked  int
	got     []string // payloads received
	topics  []string // received on another topic than the events one
}

func (h *sasHub) ID() string { return "sas" }
func (h *sasHub) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}
func (h *sasHub) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

func (h *sasHub) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	host, _, _ := strings.Cut(string(pk.Connect.Username), "/")
	pw := string(pk.Connect.Password)
	se := pw[strings.LastIndex(pw, "&se=")+len("&se="):]
	unix, err := strconv.ParseInt(se, 10, 64)
	expires := time.Unix(unix, 0)
	switch {
	case err != nil,
		string(pk.Connect.Username) != host+"/"+h.device+"/?api-version="+AzureAPIVersion,
		cl.ID != h.device,
		pw != azureSAS(host+"/devices/"+h.device, h.key, expires):
		h.refused = append(h.refused, "bad credentials: "+pw)
		return false
	case !time.Now().Before(expires):
		h.refused = append(h.refused, "expired: "+pw)
		return false
	}
	h.tokens[pw] = true
	h.expires[cl.ID] = expires
	return true
}

// cut disconnects every client whose token has expired, as IoT Hub does.
func (h *sasHub) cut() {
	for _, cl := range h.srv.Clients.GetAll() {
		h.mu.Lock()
		exp, ok := h.expires[cl.ID]
		expired := ok && !time.Now().Before(exp) && !cl.Closed()
		if expired {
			h.kicked++
			delete(h.expires, cl.ID)
		}
		h.mu.Unlock()
		if expired {
			h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		}
	}
}

// TestAzureIoTHubRenewal: a bridge with AzureIoTHub credentials valid for
// 3 s forwards for 8 s, reconnecting with a fresh token each time before
// the hub would cut it: every message arrives, in order, on the one
// device-to-cloud topic (Rule.Topic), and the hub never has to cut the
// connection.
func TestAzureIoTHubRenewal(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	h := &sasHub{t: t, key: key, device: "dev1", tokens: map[string]bool{}, expires: map[string]time.Time{}}
	h.srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: quiet})
	if err := h.srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	const events = "devices/dev1/messages/events/"
	err := h.srv.Subscribe(events+"#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		h.mu.Lock()
		h.got = append(h.got, string(pk.Payload))
		if pk.TopicName != events {
			h.topics = append(h.topics, pk.TopicName)
		}
		h.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	l := mqtttest.NewListener("hub", "127.0.0.1:0")
	if err := h.srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Serve(); err != nil {
		t.Fatal(err)
	}
	defer h.srv.Close()
	stopCut := make(chan struct{})
	cutDone := make(chan struct{})
	go func() {
		defer close(cutDone)
		for {
			select {
			case <-stopCut:
				return
			case <-time.After(20 * time.Millisecond):
				h.cut()
			}
		}
	}()
	defer func() { close(stopCut); <-cutDone }()

	r := startBridge(t, l.Address(), []Rule{{Filter: "sensors/#", Topic: events, QoS: 1}}, func(c *Config) {
		c.Protocol, c.ClientID = ProtocolMQTT311, "dev1"
		c.Credentials = AzureIoTHub("dev1", key, 3*time.Second)
	})
	want := seqPayloads("m", 80)
	for _, p := range want {
		r.publish(t, "sensors/a", p)
		time.Sleep(100 * time.Millisecond) // spread over almost three tokens' lives
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		h.mu.Lock()
		got, tokens, kicked, refused, topics := slices.Clone(h.got), len(h.tokens), h.kicked, slices.Clone(h.refused), slices.Clone(h.topics)
		h.mu.Unlock()
		if len(got) >= len(want) {
			if !slices.Equal(dedupe(got), want) {
				t.Fatalf("the hub got %d messages, not the %d published in order:\n%v", len(got), len(want), got)
			}
			if len(topics) > 0 {
				t.Fatalf("messages on other topics than %s: %q", events, topics)
			}
			if tokens < 3 || kicked != 0 || len(refused) != 0 {
				t.Fatalf("%d tokens accepted (want 3 or more), %d connections cut for an expired token, refused %q (want none)", tokens, kicked, refused)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hub got %d of %d messages; %d tokens, %d cut, refused %q", len(got), len(want), tokens, kicked, refused)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dedupe drops repeats of what came before (resends after a reconnect).
func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
