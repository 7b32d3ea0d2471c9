package queue

// Opening a database only to read it (Options.Inspect): `ralph queue stats`
// and `ralph queue peek` on a stopped gateway's data dir, or on a copy set
// aside in lost+found. Nothing in the directory may change: not a cursor,
// not a deletion, not a file Badger would create, truncate or compact. So
// Badger opens it read-only, and the queue runs no committer and no
// value-log GC. Badger cannot open read-only a database it must write to
// first: after a crash or a power cut its memtable log is replayed and
// truncated (ErrTruncateNeeded), and a log in the layout before batches is
// upgraded (migrate.go). Such a database is copied to a temporary
// directory, and the copy is opened, upgraded and read instead, then
// removed by Close.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/dgraph-io/badger/v4"
)

// ErrReadOnly is returned for appends and KV writes to a queue opened
// with Inspect.
var ErrReadOnly = errors.New("queue: opened read-only, to inspect it")

// openInspect opens the database in dir to read it without writing to it,
// and returns the temporary copy it opened instead, if it had to ("" if
// not).
func openInspect(dir string, opts Options) (*badger.DB, string, error) {
	db, err := tryOpen(badgerOptions(dir, opts.Logger).WithReadOnly(true))
	if err == nil {
		old, herr := hasSingleEntries(db)
		if herr == nil && !old {
			return db, "", nil
		}
		db.Close()
		if herr != nil {
			return nil, "", herr
		}
		err = errors.New("its log is in the layout before batches, which reading it upgrades")
	} else if environmental(err) {
		return nil, "", err
	}
	// Read a copy, which Badger and the upgrade may write to.
	scratch, cerr := copyForInspection(dir)
	if cerr != nil {
		return nil, "", fmt.Errorf("it does not open read-only (%v), and copying it to read the copy failed: %w", err, cerr)
	}
	opts.Logger.Info("queue: reading a temporary copy of the database, which does not open read-only", "dir", dir, "copy", scratch, "reason", err)
	db, cerr = tryOpen(badgerOptions(scratch, opts.Logger))
	if cerr != nil {
		os.RemoveAll(scratch)
		return nil, "", fmt.Errorf("it does not open read-only (%v), nor does a copy of it: %w", err, cerr)
	}
	return db, scratch, nil
}

// hasSingleEntries reports whether the log still holds entries of the
// layout before batches, which migrate rewrites.
func hasSingleEntries(db *badger.DB) (bool, error) {
	found := false
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixMsg}})
		defer it.Close()
		it.Rewind()
		found = it.Valid()
		return nil
	})
	return found, err
}

// copyForInspection copies the database's files into a new temporary
// directory (Badger's directory is flat), if the file system there has
// room for them.
func copyForInspection(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var size int64
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return "", err
		}
		size += info.Size()
	}
	tmp := os.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(tmp, &st); err != nil {
		return "", fmt.Errorf("free space in %s: %w", tmp, err)
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < size {
		return "", fmt.Errorf("the copy needs %d bytes and %s has %d free (set TMPDIR to a directory with room)", size, tmp, free)
	}
	scratch, err := os.MkdirTemp("", "ralph-inspect-")
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(dir, e.Name()), filepath.Join(scratch, e.Name())); err != nil {
			os.RemoveAll(scratch)
			return "", err
		}
	}
	return scratch, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
