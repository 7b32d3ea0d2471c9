package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/gateway"
)

// treeHash describes every file and directory under root by name, type,
// size and the SHA-256 of its content, one line each, in walk order.
func treeHash(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			fmt.Fprintf(&b, "%s/\n", rel)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s %d %x\n", rel, info.Size(), sha256.Sum256(data))
		default:
			fmt.Fprintf(&b, "%s %s\n", rel, info.Mode().Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// offlineStats is what `ralph queue stats` prints when it reads the data
// dir itself.
type offlineStats struct {
	Queue struct {
		Head uint64
	}
	Bridges []struct {
		Name    string
		Cursor  uint64
		Backlog uint64
	}
}

// TestQueueReadOnlyWhenStopped: `ralph queue stats` and `ralph queue peek`
// on a stopped gateway read the data dir without changing a byte of it:
// its messages, forwarded ones kept by keep_local and a backlog the bridge
// holds, are all still there, and so is everything else. After a clean
// stop, and after a SIGKILL (Badger's memtable log then needs replaying,
// which writes).
func TestQueueReadOnlyWhenStopped(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(p *proc)
	}{
		{"stopped", func(p *proc) { p.stop() }},
		{"killed", func(p *proc) { p.kill() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newMosquitto(t)
			s := newSetup(t, up.addr(), "")
			appendQueue(t, s, "keep_local = \"1h\"\n")
			p := startRalph(t, s.config, s.addr)
			forwarded := publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 5))
			up.collector().WaitAll(t, forwarded, 10*time.Second)
			waitStatus(t, s, "5 forwarded and acknowledged", func(st gateway.Status) bool {
				return len(st.Bridges) == 1 && st.Bridges[0].Forwarded == 5 && st.Bridges[0].Queued == 0
			})
			up.stop()
			held := publish(t, s.addr, "dev", 5, "sensors/a", payloads("b", 0, 3))
			waitStatus(t, s, "3 queued", func(st gateway.Status) bool { return st.Bridges[0].Queued == 3 })
			tc.end(p)

			data := filepath.Join(s.dir, "data")
			before := treeHash(t, data)
			want := append(append([]string(nil), forwarded...), held...)
			for round := range 2 {
				out, code := ralphCmd(t, "queue", "stats", "--config", s.config)
				var st offlineStats
				if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
					t.Fatalf("round %d: queue stats: exit %d, %v\n%s", round, code, err, out)
				}
				if len(st.Bridges) != 1 || st.Bridges[0].Name != "bridge/up" || st.Bridges[0].Cursor != 6 ||
					st.Bridges[0].Backlog != 3 || st.Queue.Head != 9 {
					t.Fatalf("round %d: queue stats: want head 9 and bridge/up at cursor 6 with a backlog of 3:\n%s", round, out)
				}
				if after := treeHash(t, data); after != before {
					t.Fatalf("round %d: queue stats changed the data dir:\nbefore:\n%s\nafter:\n%s", round, before, after)
				}

				out, code = ralphCmd(t, "queue", "peek", "20", "--config", s.config)
				var peeked []gateway.PeekedMessage
				if err := json.Unmarshal([]byte(out), &peeked); err != nil || code != 0 {
					t.Fatalf("round %d: queue peek: exit %d, %v\n%s", round, code, err, out)
				}
				var got []string
				for i, m := range peeked {
					if m.Seq != uint64(i+1) {
						t.Fatalf("round %d: queue peek: message %d has seq %d\n%s", round, i, m.Seq, out)
					}
					got = append(got, m.Payload)
				}
				if strings.Join(got, " ") != strings.Join(want, " ") {
					t.Fatalf("round %d: queue peek: got %v, want %v", round, got, want)
				}
				if after := treeHash(t, data); after != before {
					t.Fatalf("round %d: queue peek changed the data dir:\nbefore:\n%s\nafter:\n%s", round, before, after)
				}
			}

			// Started again, the gateway holds all eight and forwards the
			// three it had not.
			p = startRalph(t, s.config, s.addr)
			out, code := ralphCmd(t, "queue", "peek", "20", "--addr", s.httpAddr)
			var peeked []gateway.PeekedMessage
			if err := json.Unmarshal([]byte(out), &peeked); err != nil || code != 0 || len(peeked) != 8 {
				t.Fatalf("queue peek through the restarted gateway: exit %d, %v, want 8 messages\n%s", code, err, out)
			}
			up.start(t)
			up.collector().WaitAll(t, held, 15*time.Second)
			p.stop()
		})
	}
}

// TestQueueFallsBackOnlyWhenUnreachable: stats and peek open the data dir
// only when nothing answers at http.listen. An error from whatever
// answers there (a 500, or no answer in time) is reported, and the data
// dir is left alone.
func TestQueueFallsBackOnlyWhenUnreachable(t *testing.T) {
	up := newMosquitto(t)
	up.stop()
	s := newSetup(t, up.addr(), "")
	p := startRalph(t, s.config, s.addr)
	publish(t, s.addr, "dev", 5, "sensors/a", payloads("a", 0, 2))
	p.stop()
	data := filepath.Join(s.dir, "data")
	before := treeHash(t, data)

	// Stopped, with nothing on http.listen: the data dir is read.
	out, code := ralphCmd(t, "queue", "stats", "--config", s.config)
	var st offlineStats
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 || len(st.Bridges) != 1 || st.Bridges[0].Backlog != 2 {
		t.Fatalf("queue stats with ralph stopped: exit %d, %v\n%s", code, err, out)
	}

	l, err := net.Listen("tcp", s.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	hang := make(chan struct{})
	defer close(hang)
	var failing atomic.Bool
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"error":"the queue is on fire"}`)
			return
		}
		select { // never answers: the client gives up
		case <-hang:
		case <-r.Context().Done():
		}
	})}}
	srv.Start()
	defer srv.Close()

	failing.Store(true)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"queue", "stats"}, "GET /status: 500 Internal Server Error: the queue is on fire"},
		{[]string{"queue", "peek"}, "GET /queue/peek?n=10: 500 Internal Server Error: the queue is on fire"},
	} {
		out, code := ralphCmd(t, append(c.args, "--config", s.config)...)
		if code != 1 || !strings.Contains(out, c.want) || strings.Contains(out, "{\n") {
			t.Fatalf("%v with a 500 on http.listen: exit %d, want 1 and %q, not the data dir's contents:\n%s", c.args, code, c.want, out)
		}
	}
	srv.Config.SetKeepAlivesEnabled(false)
	failing.Store(false)
	out, code = ralphCmd(t, "queue", "stats", "--config", s.config)
	if code != 1 || !strings.Contains(out, "context deadline exceeded") || strings.Contains(out, "{\n") {
		t.Fatalf("queue stats with no answer on http.listen: exit %d, want 1 and the timeout, not the data dir's contents:\n%s", code, out)
	}
	if after := treeHash(t, data); after != before {
		t.Fatalf("the data dir changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
