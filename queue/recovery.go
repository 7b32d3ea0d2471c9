package queue

// Opening the database after a power cut. Badger recovers torn logs by
// itself, but not every state a cut leaves: a file it created just before
// the cut, never synced, comes back empty, and Badger refuses to open an
// empty memtable or value-log file ("Create a new file"). Under systemd
// that is a restart loop with every queued message stranded. So the queue
// sets such files aside before Badger sees them, and if the database still
// does not open, sets the whole database aside and starts empty rather
// than never starting again.

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// maxOpenAttempts is how many starts in a row may die while opening the
// database (a panic in a Badger goroutine, an OOM kill) before it is
// considered beyond repair and set aside.
const maxOpenAttempts = 3

// Names inside the lost+found directory beside the queue's.
const (
	attemptsFile  = "opening"      // starts that began opening and have not finished
	reasonFile    = "REASON"       // in a set-aside database: why
	ackFile       = "ACKNOWLEDGED" // in a set-aside database: an operator has seen it
	setAsidePrefx = "db-"
)

// LostFound returns the directory where the queue in dir puts what it sets
// aside: lost+found beside dir.
func LostFound(dir string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(dir)), "lost+found")
}

// Recovery says what Open had to set aside.
type Recovery struct {
	Files []string // empty files a power cut left, moved to lost+found
	DB    string   // the whole database, moved there because it did not open
}

// openDB opens Badger in opts.Dir, repairing what a power cut can leave.
func openDB(opts Options) (*badger.DB, Recovery, error) {
	var rec Recovery
	lf := LostFound(opts.Dir)
	if err := os.MkdirAll(lf, 0o750); err != nil {
		return nil, rec, err
	}
	attempts := readAttempts(lf)
	if attempts >= maxOpenAttempts {
		reason := fmt.Sprintf("%d starts in a row ended while the database was being opened", attempts)
		if err := setAsideDB(opts.Dir, lf, reason, &rec, opts.Logger); err != nil {
			return nil, rec, err
		}
		attempts = 0
	}
	if err := writeAttempts(lf, attempts+1); err != nil {
		return nil, rec, err
	}
	files, err := setAsideEmpty(opts.Dir, lf)
	rec.Files = files
	if err != nil {
		return nil, rec, err
	}
	for _, f := range files {
		opts.Logger.Warn("queue: set aside a file a power cut left empty (it held nothing synced)", "file", f)
	}
	db, err := tryOpen(badgerOptions(opts.Dir, opts.Logger))
	if err != nil && !environmental(err) && rec.DB == "" {
		reason := err.Error()
		if err := setAsideDB(opts.Dir, lf, reason, &rec, opts.Logger); err != nil {
			return nil, rec, err
		}
		db, err = tryOpen(badgerOptions(opts.Dir, opts.Logger))
	}
	// Whatever the outcome, this start did not die in the open: only
	// starts that did are counted.
	if err := os.Remove(filepath.Join(lf, attemptsFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		opts.Logger.Warn("queue: clearing the open marker", "err", err)
	}
	if err != nil {
		return nil, rec, err
	}
	return db, rec, nil
}

// tryOpen opens Badger, turning a panic during the open into an error.
func tryOpen(o badger.Options) (db *badger.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("badger panicked: %v", p)
		}
	}()
	return badger.Open(o)
}

// environmental reports errors that say nothing about the database's
// contents: another process holds it, a permission, a full or read-only
// disk. Setting the database aside would not help and would strand its
// messages.
func environmental(err error) bool {
	return strings.Contains(err.Error(), "Cannot acquire directory lock") ||
		errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EROFS)
}

// setAsideEmpty moves the empty files Badger cannot open to lost+found.
// An empty file never held synced data: a sync makes the file's size
// durable with its contents. Tables are left to Badger, which deletes
// those its manifest does not name and must refuse those it does.
func setAsideEmpty(dir, lf string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	hasTables := false
	for _, e := range entries {
		hasTables = hasTables || strings.HasSuffix(e.Name(), ".sst")
	}
	var moved []string
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".mem"), strings.HasSuffix(name, ".vlog"),
			name == "DISCARD", name == "KEYREGISTRY",
			name == "MANIFEST" && !hasTables: // no table lost with it
		default:
			continue
		}
		info, err := e.Info()
		if err != nil || info.Size() != 0 {
			continue
		}
		dst := filepath.Join(lf, time.Now().UTC().Format("20060102T150405.000000000")+"-"+name)
		if err := os.Rename(filepath.Join(dir, name), dst); err != nil {
			return moved, fmt.Errorf("setting aside empty %s: %w", name, err)
		}
		moved = append(moved, dst)
	}
	if len(moved) > 0 {
		if err := syncDirs(dir, lf); err != nil {
			return moved, err
		}
	}
	return moved, nil
}

// setAsideDB moves the whole database to lost+found, with a note of why,
// so that the queue can start empty. Nothing is deleted: `ralph queue`
// can read the copy.
func setAsideDB(dir, lf, reason string, rec *Recovery, log *slog.Logger) error {
	dst := filepath.Join(lf, setAsidePrefx+time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(dir, dst); err != nil {
		return fmt.Errorf("setting aside the database that does not open (%s): %w", reason, err)
	}
	if err := os.WriteFile(filepath.Join(dst, reasonFile), []byte(reason+"\n"), 0o640); err != nil {
		log.Warn("queue: writing why the database was set aside", "err", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := syncDirs(dst, lf, filepath.Dir(dir)); err != nil {
		return err
	}
	rec.DB = dst
	log.Error("queue: the database could not be opened; it was set aside whole and the queue starts EMPTY: "+
		"its messages are not forwarded (read them with `ralph queue peek --dir`; acknowledge with `ralph queue acknowledge`)",
		"set_aside", dst, "reason", reason)
	return nil
}

func readAttempts(lf string) int {
	b, err := os.ReadFile(filepath.Join(lf, attemptsFile))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func writeAttempts(lf string, n int) error {
	p := filepath.Join(lf, attemptsFile)
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, n)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDirs(lf)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return nil
}

// syncDirs fsyncs directories, making the files created, renamed or
// removed in them durable.
func syncDirs(dirs ...string) error {
	for _, d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("sync %s: %w", d, err)
		}
	}
	return nil
}

// SetAside is a database the queue set aside whole because it did not open.
type SetAside struct {
	Path         string `json:"path"`
	Reason       string `json:"reason"`
	Acknowledged bool   `json:"acknowledged"`
}

// SetAsides lists the databases set aside beside the queue in dir.
func SetAsides(dir string) ([]SetAside, error) {
	lf := LostFound(dir)
	entries, err := os.ReadDir(lf)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []SetAside
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), setAsidePrefx) {
			continue
		}
		p := filepath.Join(lf, e.Name())
		reason, _ := os.ReadFile(filepath.Join(p, reasonFile))
		_, err := os.Stat(filepath.Join(p, ackFile))
		out = append(out, SetAside{Path: p, Reason: strings.TrimSpace(string(reason)), Acknowledged: err == nil})
	}
	return out, nil
}

// AcknowledgeSetAsides marks every set-aside database beside the queue in
// dir as seen by an operator, so that it no longer makes the gateway
// unhealthy. It returns how many it marked.
func AcknowledgeSetAsides(dir string) (int, error) {
	list, err := SetAsides(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range list {
		if s.Acknowledged {
			continue
		}
		if err := os.WriteFile(filepath.Join(s.Path, ackFile), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o640); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
