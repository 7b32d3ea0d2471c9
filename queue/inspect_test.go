package queue

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// dirHash describes every file and directory under root by name, type,
// size and content.
func dirHash(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			fmt.Fprintf(&b, "%s/\n", p)
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %d %x\n", p, info.Size(), sha256.Sum256(data))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestInspectChangesNothing: a queue opened with Inspect reads what is
// stored, and the directory it was opened on (and the one beside it, for
// lost+found) stays byte for byte as it was: cleanly closed, left by a
// writer that did not close it (its memtable log to replay: a copy is
// read), and in the layout before batches (to upgrade: a copy is read).
// Appends and KV writes fail; the copy is gone after Close.
func TestInspectChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T) (dir string, payloads []string)
	}{
		{"closed", func(t *testing.T) (string, []string) {
			return filled(t, 50), strings.Fields(want(50))
		}},
		{"not closed", func(t *testing.T) (string, []string) {
			// What a SIGKILL leaves: the files of a queue still open,
			// every append written (the page cache survives).
			dir := filled(t, 30)
			q := openTest(t, dir)
			defer q.Close()
			if _, err := q.Consumer("up", ConsumerOptions{}); err != nil {
				t.Fatal(err)
			}
			for i := 30; i < 50; i++ {
				if err := q.Append(context.Background(), msg("t", strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			dst := filepath.Join(t.TempDir(), "db")
			if err := os.Mkdir(dst, 0o750); err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if err := copyFile(filepath.Join(dir, e.Name()), filepath.Join(dst, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
			return dst, strings.Fields(want(50))
		}},
		{"layout before batches", func(t *testing.T) (string, []string) {
			root := t.TempDir()
			if out, err := exec.Command("tar", "-xzf", "testdata/layout1.tgz", "-C", root).CombinedOutput(); err != nil {
				t.Fatalf("tar: %v\n%s", err, out)
			}
			var ps []string
			for n := 100; n < 300; n++ {
				p := fmt.Sprintf("m%03d", n)
				if n%10 == 0 {
					p += strings.Repeat("x", 2000)
				}
				ps = append(ps, p)
			}
			return filepath.Join(root, "db"), ps
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, payloads := tc.make(t)
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			parent := filepath.Dir(dir)
			before := dirHash(t, parent)

			q, err := Open(Options{Dir: dir, Inspect: true, Logger: openTestLogger})
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := q.Peek(1000)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range msgs {
				got = append(got, string(m.Payload))
			}
			if strings.Join(got, " ") != strings.Join(payloads, " ") {
				t.Fatalf("peeked %d messages %.80q..., want %d", len(got), got, len(payloads))
			}
			name := "up"
			if tc.name == "layout before batches" {
				name = "bridge/up"
			}
			c, err := q.Consumer(name, ConsumerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range readN(t, c, int(c.Backlog())) {
				c.Ack(m.Seq)
			}
			c.Purge()
			if _, err := q.Consumer("new", ConsumerOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := q.Append(context.Background(), msg("t", "x")); !errors.Is(err, ErrReadOnly) {
				t.Fatalf("append: %v, want ErrReadOnly", err)
			}
			if err := q.KV("retained").Set("a", []byte("b")); !errors.Is(err, ErrReadOnly) {
				t.Fatalf("kv set: %v, want ErrReadOnly", err)
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			if after := dirHash(t, parent); after != before {
				t.Fatalf("inspecting changed the directory:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Fatalf("%d entries left in TMPDIR after Close, e.g. %s", len(left), left[0].Name())
			}
		})
	}
}
