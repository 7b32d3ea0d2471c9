package localbroker

import (
	"log/slog"
	"maps"
	"testing"

	"github.com/ralph-gateway/ralph/internal/testlog"
	"github.com/ralph-gateway/ralph/queue"
)

// TestInflightStore: whatever the order of records handed over and
// dropped, and however the writer's transactions fall among them, the
// database holds, once flushed, exactly the records not dropped, each as
// last set.
func TestInflightStore(t *testing.T) {
	type op struct {
		do  string // set, drop, flush, forget, load
		key string
		val string
	}
	a, b := "o\x001", "p\x001"
	for _, tt := range []struct {
		name string
		ops  []op
		want map[string]string
	}{
		{"set", []op{{"set", a, "1"}}, map[string]string{a: "1"}},
		{"set, drop", []op{{"set", a, "1"}, {"drop", a, ""}}, map[string]string{}},
		{"set, written, drop", []op{{"set", a, "1"}, {"flush", "", ""}, {"drop", a, ""}}, map[string]string{}},
		{"written, dropped, set again", []op{{"set", a, "1"}, {"flush", "", ""}, {"drop", a, ""}, {"set", a, "2"}}, map[string]string{a: "2"}},
		{"written, set again, dropped", []op{{"set", a, "1"}, {"flush", "", ""}, {"set", a, "2"}, {"drop", a, ""}}, map[string]string{}},
		{"loaded at start, dropped", []op{{"load", a, "1"}, {"drop", a, ""}}, map[string]string{}},
		{"many, no flush", []op{{"set", a, "1"}, {"drop", a, ""}, {"set", a, "2"}, {"set", b, "3"}, {"drop", a, ""}, {"set", a, "4"}}, map[string]string{a: "4", b: "3"}},
		{"forget an owner", []op{{"set", a, "1"}, {"set", b, "2"}, {"forget", "o", ""}}, map[string]string{b: "2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log := slog.New(slog.NewTextHandler(new(testlog.Buffer), nil))
			q, err := queue.Open(queue.Options{Dir: t.TempDir(), Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			s := newInflightStore(q.KV("inflight"), log)
			for _, o := range tt.ops {
				switch o.do {
				case "set":
					s.set(o.key, []byte(o.val))
				case "drop":
					s.drop(o.key)
				case "flush":
					s.flush()
				case "load":
					if err := s.kv.Set(o.key, []byte(o.val)); err != nil {
						t.Fatal(err)
					}
					s.loaded(o.key)
				case "forget":
					s.forget(o.key)
					// What the database holds of the owner is the caller's
					// to delete.
					s.kv.Scan(func(k string, _ []byte) error {
						if owner, _, _ := cut(k); owner == o.key {
							s.kv.Delete(k)
						}
						return nil
					})
				}
			}
			s.flush()
			got := map[string]string{}
			if err := s.kv.Scan(func(k string, v []byte) error { got[k] = string(v); return nil }); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Fatalf("stored %q, want %q", got, tt.want)
			}
		})
	}
}

// TestInflightDropWhileWritten: a record dropped while the transaction
// that writes it is under way is deleted after it; one whose deletion is
// under way needs nothing more.
func TestInflightDropWhileWritten(t *testing.T) {
	for _, tt := range []struct {
		name    string
		writing []byte // the record being written; nil: its deletion
		want    bool   // a deletion is to follow
	}{
		{"record being written", []byte("1"), true},
		{"deletion being written", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newInflightStore(nil, nil)
			s.stored["o\x001"] = tt.writing == nil
			s.writing = map[string][]byte{"o\x001": tt.writing}
			s.running = true // the writer, between its transaction and its bookkeeping
			s.drop("o\x001")
			if rec, ok := s.pending["o\x001"]; ok != tt.want || rec != nil {
				t.Fatalf("pending %q (%v), want a deletion: %v", rec, ok, tt.want)
			}
		})
	}
}
