package queue

import (
	"fmt"
	"log/slog"
	"strconv"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// valueThreshold is the value size from which Badger keeps a value in the
// value log rather than in the memtable log and tables.
const valueThreshold = 4 << 10

// inValueLog reports whether Badger writes val to the value log.
func inValueLog(val []byte) bool { return len(val) >= valueThreshold }

// badgerOptions tunes Badger for a 512 MB Raspberry Pi. Badger's defaults
// (64 MB memtables × 5, 256 MB block cache, 1 GB value-log files mapped at
// open) are sized for servers and used over 500 MB RSS in a test; the queue
// writes small records sequentially and reads them back once, so caches buy
// little.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	o := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		// We fsync explicitly after each group commit (see Queue.commit):
		// Badger's per-transaction sync would serialise appenders and only
		// logs value-log sync errors.
		WithSyncWrites(false).
		// Two 4 MB memtables: a group commit of 4096 small messages is well
		// under the ~15% transaction limit, and each memtable's arena is
		// Go heap, so this is most of the queue's memory.
		WithMemTableSize(4 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		// Compaction keeps a pool of table builders, each holding twice
		// its table's size: small tables keep that pool to a few MB.
		WithBaseTableSize(512 << 10).
		// No compression: queued messages are short-lived and sensor
		// payloads compress poorly, while Snappy's table-building buffers
		// cost over 20 MB of heap during flushes. Without compression no
		// block cache is needed (blocks are read through mmap); the index
		// cache is bounded so memory does not grow with the backlog.
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithIndexCacheSize(4 << 20).
		// Commits under the threshold (a few sensor messages) live in the
		// LSM tree and vanish with compaction; bigger ones go to the value
		// log, whose files are small: GC gives back a drained backlog's
		// space a file at a time, all but the file being written (so at
		// most 8 MiB stay), and 32-bit builds do not map large regions.
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(8 << 20).
		WithNumCompactors(2).
		WithMetricsEnabled(false).
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1)
	if strconv.IntSize == 32 {
		// On 32-bit platforms (armhf), ristretto's z.Allocator (v2.2.0 up
		// to at least v2.4.2) loses its place when it needs a second
		// buffer ((bufIdx+1)<<32 overflows an int) and hands out its first
		// buffer again: Badger's table builder then overwrites blocks it
		// has written, and the corrupt table panics the next reader. Every
		// builder must fit in its allocator's first buffer, of 2×TableSize
		// (rounded up to a power of two):
		//   - a flush writes a whole memtable as one table, so tables are
		//     as large as a memtable, at every level (builders share a pool
		//     of allocators);
		//   - an L0→L0 compaction builds one table of any size (its
		//     TableSize is MaxUint32, a 512-byte buffer on 32-bit). It needs
		//     four tables in L0: stalling writes at three prevents it.
		o = o.WithBaseTableSize(o.MemTableSize).WithNumLevelZeroTablesStall(3)
		o.TableSizeMultiplier = 1
	}
	return o
}

// badgerLogger sends Badger's printf-style logs to slog. Badger's info
// messages are chatty (every compaction), so they go to debug.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error("badger: " + trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn("badger: " + trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug("badger: " + trim(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debug("badger: " + trim(fmt.Sprintf(f, a...))) }

func trim(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	return s
}
