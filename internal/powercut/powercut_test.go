package powercut

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCut checks the model the package comment promises, on a real LazyFS
// mount: what was synced survives a cut, nothing else does, whichever way
// it was written.
func TestCut(t *testing.T) {
	fs := Mount(t)
	dir := fs.Dir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1024) // 16 KiB: several pages

	tests := []struct {
		name  string
		write func(t *testing.T, path string)
		want  []byte // content after the cut
	}{
		{"written, not synced", func(t *testing.T, path string) {
			writeFile(t, path, data, false)
		}, []byte{}},
		{"written and fsynced", func(t *testing.T, path string) {
			writeFile(t, path, data, true)
		}, data},
		{"fsynced, then appended", func(t *testing.T, path string) {
			writeFile(t, path, data, true)
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(data)
			f.Close()
		}, data},
		{"fsynced, then renamed", func(t *testing.T, path string) {
			writeFile(t, path+".tmp", data, true)
			if err := os.Rename(path+".tmp", path); err != nil {
				t.Fatal(err)
			}
		}, data},
		// Badger writes its memtables through shared mmaps: pages dirtied
		// there reach LazyFS only when the kernel writes them back, which
		// must not let them survive the cut.
		{"mmap, no msync", func(t *testing.T, path string) {
			writeMmap(t, path, data, false)
		}, make([]byte, len(data))},
		{"mmap, msync", func(t *testing.T, path string) {
			writeMmap(t, path, data, true)
		}, data},
	}
	for i, tt := range tests {
		tt.write(t, filepath.Join(dir, string(rune('a'+i))))
	}
	fs.Cut()
	if fs.Dir() != dir {
		t.Fatalf("Dir changed across the cut: %s, then %s", dir, fs.Dir())
	}
	for i, tt := range tests {
		got, err := os.ReadFile(filepath.Join(dir, string(rune('a'+i))))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s: %d bytes after the cut (%.16q...), want %d", tt.name, len(got), got, len(tt.want))
		}
	}

	// The new mount works like the first, for a second cut.
	writeFile(t, filepath.Join(dir, "second"), data, false)
	fs.Cut()
	if got, err := os.ReadFile(filepath.Join(dir, "second")); err != nil || len(got) != 0 {
		t.Fatalf("second cut: %d bytes, %v; want an empty file", len(got), err)
	}
}

// TestLazyFSDies: LazyFS dying on its own is a cut at that moment, after
// which Cut mounts again.
func TestLazyFSDies(t *testing.T) {
	fs := Mount(t)
	data := []byte("synced")
	synced, unsynced := filepath.Join(fs.Dir(), "synced"), filepath.Join(fs.Dir(), "unsynced")
	writeFile(t, synced, data, true)
	writeFile(t, unsynced, data, false)
	if err := fs.Err(); err != nil {
		t.Fatalf("Err while LazyFS runs: %v", err)
	}
	fs.proc.cmd.Process.Kill()
	<-fs.proc.exited
	if fs.Err() == nil {
		t.Fatal("Err is nil after LazyFS died")
	}
	fs.Cut()
	if err := fs.Err(); err != nil {
		t.Fatalf("Err after the cut: %v", err)
	}
	for path, want := range map[string][]byte{synced: data, unsynced: {}} {
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q, %v; want %q", filepath.Base(path), got, err, want)
		}
	}
	if fs.cuts != 1 || fs.crashes != 1 {
		t.Errorf("%d cuts, %d of them LazyFS dying; want 1 and 1", fs.cuts, fs.crashes)
	}
}

func writeFile(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

// writeMmap sizes the file (synced, as Badger does when it creates a
// memtable) and fills it through a shared mapping.
func writeMmap(t *testing.T, path string, data []byte, msync bool) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, len(data), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(m, data)
	if msync {
		// syscall has no Msync; fsync writes the dirty pages back too.
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Munmap(m); err != nil {
		t.Fatal(err)
	}
}
