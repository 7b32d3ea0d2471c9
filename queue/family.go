package queue

// Families of consumers: consumers that divide one reader's messages
// between them (a bridge's priorities), and inherit each other's place
// when the division changes. See ConsumerOptions.Family.

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// inFamily reports whether name is a member of family.
func inFamily(family, name string) bool {
	return name == family || strings.HasPrefix(name, family+"/")
}

// familyCursor returns the lowest cursor persisted for a member of
// family, if any is.
func familyCursor(txn *badger.Txn, family string) (cursor uint64, found bool, err error) {
	prefix := append([]byte{prefixCursor}, family...)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if !inFamily(family, string(it.Item().Key()[1:])) {
			continue
		}
		err := it.Item().Value(func(b []byte) error {
			if len(b) != 8 {
				return fmt.Errorf("cursor %q: %w", it.Item().Key()[1:], errCorrupt)
			}
			if v := binary.BigEndian.Uint64(b); !found || v < cursor {
				cursor, found = v, true
			}
			return nil
		})
		if err != nil {
			return 0, false, err
		}
	}
	return cursor, found, nil
}

// ForgetFamily deletes the persisted cursors of family's members that are
// not registered now, and persists those of the members that are, in one
// transaction: call it once a family's new division is registered, so
// that a later one inherits from this one alone.
func (q *Queue) ForgetFamily(family string) error {
	if q.opts.Inspect {
		return nil
	}
	q.mu.Lock()
	current := make(map[string]uint64)
	for name, c := range q.consumers {
		if inFamily(family, name) {
			current[name] = c.cursor
		}
	}
	// Closed members' final cursors are not to be written after all.
	q.pendingCursors = slices.DeleteFunc(q.pendingCursors, func(c *Consumer) bool {
		_, registered := current[c.name]
		return inFamily(family, c.name) && !registered
	})
	q.mu.Unlock()
	q.writes.RLock()
	defer q.writes.RUnlock()
	err := q.db.Update(func(txn *badger.Txn) error {
		var stale [][]byte
		it := txn.NewIterator(badger.IteratorOptions{Prefix: append([]byte{prefixCursor}, family...)})
		for it.Rewind(); it.Valid(); it.Next() {
			name := string(it.Item().Key()[1:])
			if _, ok := current[name]; !ok && inFamily(family, name) {
				stale = append(stale, it.Item().KeyCopy(nil))
			}
		}
		it.Close()
		for _, k := range stale {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		for name, pos := range current {
			if err := txn.Set(append([]byte{prefixCursor}, name...), uint64Bytes(pos)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("queue: forgetting the old members of %q: %w", family, err)
	}
	return nil
}
