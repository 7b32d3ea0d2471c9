package queue

import (
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// badgerOptions tunes Badger for a 512 MB Raspberry Pi. Badger's defaults
// (64 MB memtables × 5, 256 MB block cache, 1 GB value-log files mapped at
// open) are sized for servers and used over 500 MB RSS in a test; the queue
// writes small records sequentially and reads them back once, so caches buy
// little.
func badgerOptions(dir string, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(badgerLogger{log}).
		// We fsync explicitly after each group commit (see Queue.commit):
		// Badger's per-transaction sync would serialise appenders and only
		// logs value-log sync errors.
		WithSyncWrites(false).
		// Two 8 MB memtables: a group commit of 4096 small messages is well
		// under the 15% transaction limit, and flushes stay short.
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBaseTableSize(2 << 20).
		// Reads are sequential and mostly of fresh data still in memtables.
		// The block cache must be non-zero while compression is on.
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithCompression(options.Snappy).
		// Values under 1 KB (typical sensor payloads) live in the LSM tree
		// and vanish with compaction; bigger ones go to the value log, whose
		// files are kept small so GC can reclaim them and so 32-bit builds
		// do not map large regions.
		WithValueThreshold(1 << 10).
		WithValueLogFileSize(32 << 20).
		WithNumCompactors(2).
		WithMetricsEnabled(false).
		WithDetectConflicts(false).
		WithNumVersionsToKeep(1)
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
