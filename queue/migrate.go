package queue

// Upgrading a data dir in place. Before batches (batch.go) the log held one
// entry per message, m<seq> → record; Open rewrites such entries into
// batches before anything reads the log. Each batch replaces its messages
// in one transaction, so a crash or power cut mid-way leaves a log that is
// partly batches and partly single entries, in order, and the next Open
// carries on.

import (
	"encoding/binary"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// migrate rewrites every single-message entry into batches.
func (q *Queue) migrate() error {
	start := time.Now()
	var moved uint64
	for {
		n, err := q.migrateBatch()
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		moved += n
		if _, err := q.files.sync(true); err != nil {
			return err
		}
	}
	if moved > 0 {
		q.log.Info("queue: upgraded the log to batches", "messages", moved, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// migrateBatch moves the oldest run of consecutive single-message entries
// (at most one batch's worth) into one batch and returns how many.
func (q *Queue) migrateBatch() (uint64, error) {
	var keys, recs [][]byte
	var first, last uint64
	var newest time.Time
	size := 0
	err := q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixMsg}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			seq := binary.BigEndian.Uint64(item.Key()[1:])
			if len(keys) > 0 && (seq != last+1 || len(keys) == maxBatchMsgs || size+int(item.ValueSize()) > maxBatchBytes) {
				break
			}
			rec, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(keys) == 0 {
				first = seq
			}
			last = seq
			if a := decodeArrived(rec); a.After(newest) {
				newest = a
			}
			keys = append(keys, item.KeyCopy(nil))
			recs = append(recs, rec)
			size += len(rec)
		}
		return nil
	})
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	var val []byte
	var old int64
	for _, r := range recs {
		val = appendRecord(val, r)
		old += int64(len(r)) + 9 // what the old layout counted
	}
	key := batchKey(first, last, newest, len(val))
	q.bytes += int64(len(key)+len(val)) - old
	txn := q.db.NewTransaction(true)
	defer txn.Discard()
	if err := txn.Set(key, val); err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return 0, err
		}
	}
	if err := txn.Set(keyBytes, uint64Bytes(uint64(max(q.bytes, 0)))); err != nil {
		return 0, err
	}
	if err := txn.Commit(); err != nil {
		return 0, err
	}
	return uint64(len(keys)), nil
}
