package queue

// Making a commit durable with as few sync calls as the disk needs. Each
// sync call costs an SD card at least a page and often a journal commit,
// so the sync rate is the wear. Badger's DB.Sync always syncs two files,
// the active memtable's log and the current value log, even when nothing
// was written to the value log (values under the value threshold live in
// the memtable log), and it misses a memtable log that a rotation has just
// retired, still unsynced, until its flush. fileSyncer syncs exactly the
// log files that may hold unsynced writes, through descriptors of its own:
// on Linux fdatasync on any descriptor of a file writes back the pages
// Badger dirtied through its mapping, as msync does.

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type fileSyncer struct {
	dir string
	// vlogDirty is set when a write outside the committer (a KV value at or
	// over the threshold) may have gone to the value log, and cleared by
	// the sync that covers it. The committer and value-log GC say for
	// themselves whether they wrote there: a flag set before a write and
	// cleared by a sync running meanwhile would let that write's own sync
	// skip the value log.
	vlogDirty atomic.Bool

	mu       sync.Mutex
	files    map[string]*os.File
	memFrom  int // the lowest memtable log that may hold unsynced writes
	vlogFrom int // the same for value-log files

	// The log files as last listed (list), in the directory's order, and
	// the directory's time then.
	mems, vlogs         []logRef
	listedMod, listedAt time.Time
	syncedMod, syncedAt time.Time // the directory's time at its last fsync, and when that began
}

func newFileSyncer(dir string) *fileSyncer {
	return &fileSyncer{dir: dir, files: make(map[string]*os.File)}
}

// willWrite notes a value written outside the committer.
func (s *fileSyncer) willWrite(val []byte) {
	if inValueLog(val) {
		s.vlogDirty.Store(true)
	}
}

// sync fdatasyncs every log file written since the last sync, the value
// log only if vlog says the writes it covers went there (or vlogDirty),
// then the directory if files may have been created, renamed or removed
// in it since its last fsync: Badger does not, and a file whose directory
// entry is lost is lost with its data. It returns how many sync calls it
// made.
func (s *fileSyncer) sync(vlog bool) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mod, err := s.list()
	if err != nil {
		return 0, err
	}
	mems, vlogs := s.mems, s.vlogs
	calls := 0
	// The value log first: a memtable entry synced before the value it
	// points to would point at nothing after a power cut.
	if s.vlogDirty.Swap(false) || vlog {
		n, err := s.syncFrom(vlogs, &s.vlogFrom)
		calls += n
		if err != nil {
			s.vlogDirty.Store(true)
			return calls, err
		}
	}
	n, err := s.syncFrom(mems, &s.memFrom)
	calls += n
	// The directory's time is trusted as the listing's is: a change in
	// the same tick as the last fsync (after it) leaves the time as it was.
	if err != nil || mod.Equal(s.syncedMod) && s.syncedAt.Sub(mod) > dirSettle {
		return calls, err
	}
	at := time.Now()
	calls++
	if err := syncDirs(s.dir); err != nil {
		return calls, err
	}
	s.syncedMod, s.syncedAt = mod, at
	return calls, nil
}

// dirSettle is how long after a directory's last change a listing of it
// is taken to have seen that change. File systems stamp a change with a
// clock that moves in ticks of a few milliseconds, so a file created in
// the tick of a listing can leave the directory's time as it was.
const dirSettle = 50 * time.Millisecond

// list brings the log files up to date, closes the descriptors of files
// that are gone, and returns the directory's time. Listing the directory
// at every sync was a tenth of the CPU of a steady QoS 1 load; a stat
// tells whether the listing still holds: the directory's time is the
// same, and the listing was made well after it.
func (s *fileSyncer) list() (time.Time, error) {
	fi, err := os.Stat(s.dir)
	if err != nil {
		return time.Time{}, err
	}
	mod := fi.ModTime()
	if mod.Equal(s.listedMod) && s.listedAt.Sub(mod) > dirSettle {
		return mod, nil
	}
	at := time.Now()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return time.Time{}, err
	}
	s.mems, s.vlogs = s.mems[:0], s.vlogs[:0]
	present := make(map[string]bool, len(entries))
	for _, e := range entries {
		name := e.Name()
		present[name] = true
		if fid, ok := logFid(name, ".mem"); ok {
			s.mems = append(s.mems, logRef{fid, name})
		} else if fid, ok := logFid(name, ".vlog"); ok {
			s.vlogs = append(s.vlogs, logRef{fid, name})
		}
	}
	for name, f := range s.files {
		if !present[name] {
			f.Close()
			delete(s.files, name)
		}
	}
	s.listedMod, s.listedAt = mod, at
	return mod, nil
}

// syncFrom syncs the files of fids at or after *from, then moves *from to
// the newest: the older ones receive no more writes.
func (s *fileSyncer) syncFrom(logs []logRef, from *int) (int, error) {
	calls, newest := 0, *from
	for _, l := range logs {
		if l.fid < *from {
			continue
		}
		newest = max(newest, l.fid)
		name := l.name
		f := s.files[name]
		if f == nil {
			var err error
			f, err = os.OpenFile(filepath.Join(s.dir, name), os.O_RDWR, 0)
			if errors.Is(err, fs.ErrNotExist) {
				continue // flushed to a table and deleted: Badger synced the table
			}
			if err != nil {
				return calls, err
			}
			s.files[name] = f
			if strings.HasSuffix(name, ".mem") {
				allocate(f)
			}
		}
		calls++
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return calls, &fs.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
	}
	*from = newest
	return calls, nil
}

func (s *fileSyncer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, f := range s.files {
		f.Close()
		delete(s.files, name)
	}
}

// logRef is a Badger log file: a memtable log (NNNNN.mem) or a value-log
// file (NNNNNN.vlog), numbered in creation order.
type logRef struct {
	fid  int
	name string
}

func logFid(name, ext string) (int, bool) {
	if !strings.HasSuffix(name, ext) {
		return 0, false
	}
	fid, err := strconv.Atoi(strings.TrimSuffix(name, ext))
	return fid, err == nil
}

// allocate gives a memtable log's holes their blocks now, in one journal
// transaction (8 MiB with 4 MiB memtables; value-log files, of 64 MiB, are
// left sparse, as they hold only commits large enough for this to matter
// less). Badger creates its logs sparse, so each sync that reaches a
// new block also commits an allocation to the file system's journal (on
// ext4 five blocks, 20 KiB, several times the data of a small commit);
// blocks allocated ahead cost a smaller transaction when first written.
// File systems that cannot (LazyFS) are left as they are.
func allocate(f *os.File) {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return
	}
	syscall.Fallocate(int(f.Fd()), 0, 0, fi.Size())
}
