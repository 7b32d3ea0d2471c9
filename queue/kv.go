package queue

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// prefixKV starts the keys of KV stores: state that belongs in the same
// database as the queue (the broker's retained messages) without a second
// database to open, tune and keep consistent.
const prefixKV = 'k'

// KV is a small key-value store in the queue's database, under a key
// prefix of its own. Writes are not fsynced: they survive a crash of the
// process, and on a power cut the state is at most as old as the last
// queue fsync.
type KV struct {
	q      *Queue
	prefix []byte
}

// KV returns the store called name.
func (q *Queue) KV(name string) *KV {
	return &KV{q: q, prefix: []byte(string(rune(prefixKV)) + name + "/")}
}

func (k *KV) key(key string) []byte { return append(append([]byte(nil), k.prefix...), key...) }

// Set stores val under key.
func (k *KV) Set(key string, val []byte) error {
	if val == nil {
		val = []byte{} // nil is a deletion to write
	}
	return k.write(map[string][]byte{key: val}, "set", key)
}

// Delete removes key.
func (k *KV) Delete(key string) error {
	return k.write(map[string][]byte{key: nil}, "delete", key)
}

// Apply writes ops, for each key the value to set or nil to delete it, in
// one transaction, or as few as Badger's size limit allows.
func (k *KV) Apply(ops map[string][]byte) error { return k.write(ops, "apply", "") }

// write is Set, Delete and Apply; op and name (the key, if one) say what
// failed.
func (k *KV) write(ops map[string][]byte, op, name string) error {
	fail := func(err error) error {
		if name != "" {
			op = fmt.Sprintf("%s %q", op, name)
		}
		return fmt.Errorf("queue: kv %s: %s: %w", k.prefix, op, err)
	}
	if k.q.opts.Inspect {
		return fail(ErrReadOnly)
	}
	// Before: a sync starting meanwhile covers it. After: a sync that
	// cleared the mark before the value was written did not.
	for _, v := range ops {
		k.q.files.willWrite(v)
	}
	k.q.writes.RLock()
	defer k.q.writes.RUnlock()
	txn := k.q.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for key, v := range ops {
		write := func() error {
			if v == nil {
				return txn.Delete(k.key(key))
			}
			return txn.Set(k.key(key), v)
		}
		err := write()
		if errors.Is(err, badger.ErrTxnTooBig) {
			if err = txn.Commit(); err == nil {
				txn = k.q.db.NewTransaction(true)
				err = write()
			}
		}
		if err != nil {
			return fail(err)
		}
	}
	err := txn.Commit()
	for _, v := range ops {
		k.q.files.willWrite(v)
	}
	if err != nil {
		return fail(err)
	}
	return nil
}

// Scan calls fn for every key and value, in key order. val is valid only
// during the call. A value that cannot be read (a power cut kept its key,
// not its value, which KV writes do not wait for) is logged and skipped:
// state that is lost must not keep the gateway from starting.
func (k *KV) Scan(fn func(key string, val []byte) error) error {
	return k.q.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: k.prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := string(item.Key()[len(k.prefix):])
			var fnErr error
			if err := item.Value(func(v []byte) error { fnErr = fn(key, v); return nil }); err != nil {
				k.q.log.Error("queue: skipping an unreadable value", "kv", string(k.prefix), "key", key, "err", err)
				k.Unreadable()
				continue
			}
			if fnErr != nil {
				return fnErr
			}
		}
		return nil
	})
}

// Unreadable counts a value skipped because it could not be read, or
// could not be decoded by its reader, with the queue's unreadable records
// (Stats.Corrupt): state that is lost must show, not only in the log.
func (k *KV) Unreadable() {
	k.q.mu.Lock()
	k.q.stats.Corrupt++
	k.q.mu.Unlock()
}
