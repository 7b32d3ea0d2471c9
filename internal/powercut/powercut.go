// Package powercut gives a test a directory on which it can cut the power:
// a LazyFS mount, where every write stays in LazyFS's memory until it is
// fsynced, and a cut drops whatever was not.
//
// LazyFS (github.com/dsrhaslab/lazyfs, MIT, the FUSE file system Jepsen
// uses) is vendored as source in lazyfs/ (see lazyfs/UPSTREAM) and built on
// first use, once per version, into the user's cache directory.
//
// The contract:
//
//   - Mount(t) returns an FS whose Dir is an empty directory on a fresh
//     LazyFS mount over a fresh root directory. It fails the test, saying
//     what to install, when /dev/fuse, fusermount3 or LazyFS's build
//     dependencies are missing: a power-cut test that skips is a test that
//     never runs.
//   - What a cut keeps and loses is LazyFS's model: file data survives
//     exactly as far as it was fsynced (fsync, fdatasync, msync); a file
//     created and never synced comes back empty. Directory operations
//     (create, rename, unlink, mkdir) reach the underlying directory at once
//     and are never undone, so a cut does not test directory fsyncs.
//   - LazyFS implements neither statfs (the mount reports no free space, so
//     free-space checks of the program under test must be off) nor
//     fallocate (it fails with EOPNOTSUPP).
//   - Cut cuts the power. The caller must first have killed (SIGKILL) and
//     waited for every process using Dir: nothing may write during a cut.
//     Cut drops every unsynced write, waits until LazyFS says it is done,
//     then unmounts and mounts again (same Dir), so that nothing survives
//     in the kernel's caches or in LazyFS either, as after a reboot.
//   - LazyFS dying on its own (Err is then non-nil) is a power cut at that
//     moment: its cache dies with it. The caller kills what uses Dir and
//     calls Cut, which then only mounts again.
//   - When the test ends, passed or failed, the file system is unmounted
//     and its process ended. The process also dies with the test binary
//     (parent-death signal), and Mount removes dead LazyFS mounts that a
//     killed test binary left behind (go test's timeout skips cleanups).
package powercut

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ralph-gateway/ralph/internal/testlog"
)

// debianPackages is what building and mounting LazyFS needs on Debian.
const debianPackages = "cmake g++ libfuse3-dev fuse3 libtoml11-dev libspdlog-dev"

// cacheSize is LazyFS's cache. It holds every byte written to a file since
// the last mount, synced or not, and LazyFS allocates and clears all of it
// at each mount (half a second for 512 MiB, three for 1 GiB). When it is
// full, LazyFS writes straight through to disk, which would make a cut
// lose nothing; Cut fails the test then.
const cacheSize = "512mb"

//go:embed lazyfs/lazyfs-src.tar.gz lazyfs/build.sh
var source embed.FS

// FS is a LazyFS mount.
type FS struct {
	t          testing.TB
	bin        string // lazyfs
	fusermount string
	base       string // holds the config, the FIFOs and the two directories
	dir, root  string // mount point; the directory underneath
	conf       string
	faults     string   // command FIFO
	done       *os.File // completion FIFO, open read-write for the FS's life
	doneLines  *bufio.Reader
	proc       *process
	cuts       int
	crashes    int     // cuts that were LazyFS dying on its own
	peak       float64 // highest cache usage at a cut, percent
}

// process is one run of lazyfs: one mount.
type process struct {
	cmd    *exec.Cmd
	out    *testlog.Buffer
	exited chan struct{}
}

// Mount builds LazyFS if needed and mounts it on a new directory; see the
// package comment.
func Mount(t testing.TB) *FS {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("powercut: LazyFS needs FUSE: %v (load the fuse module; in a container, run with --device /dev/fuse --cap-add SYS_ADMIN)", err)
	}
	fusermount, err := exec.LookPath("fusermount3")
	if err != nil {
		t.Fatalf("powercut: LazyFS needs fusermount3: apt-get install -y %s (%v)", debianPackages, err)
	}
	bin := build(t)
	removeDeadMounts(t, fusermount)

	base := t.TempDir()
	fs := &FS{
		t:          t,
		bin:        bin,
		fusermount: fusermount,
		base:       base,
		dir:        filepath.Join(base, "mnt"),
		root:       filepath.Join(base, "root"),
		conf:       filepath.Join(base, "lazyfs.toml"),
		faults:     filepath.Join(base, "faults.fifo"),
	}
	doneFIFO := filepath.Join(base, "done.fifo")
	for _, d := range []string{fs.dir, fs.root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{fs.faults, doneFIFO} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatalf("powercut: mkfifo %s: %v", f, err)
		}
	}
	// Read-write, so that LazyFS's open for writing never blocks and our
	// reads wait (with a deadline) instead of seeing end of file between
	// two runs of LazyFS.
	if fs.done, err = os.OpenFile(doneFIFO, os.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	fs.doneLines = bufio.NewReader(fs.done)
	// logfile empty: LazyFS logs to stdout only, which we keep. Logging
	// every operation would slow it down a lot.
	conf := fmt.Sprintf(`[faults]
fifo_path = %q
fifo_path_completed = %q
[cache]
apply_eviction = false
[cache.simple]
custom_size = %q
blocks_per_page = 1
[filesystem]
log_all_operations = false
logfile = ""
`, fs.faults, doneFIFO, cacheSize)
	if err := os.WriteFile(fs.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fs.close)
	fs.mount()
	return fs
}

// Dir is the mount point: the directory to put the data under test in.
func (fs *FS) Dir() string { return fs.dir }

// Err reports why the file system is gone if LazyFS exited, with what
// LazyFS printed; nil while it runs. LazyFS has bugs of its own (it has
// aborted with "Resource deadlock avoided" while extending a file by
// truncate): a test that sees I/O errors on Dir tells LazyFS's failure from
// its own by it, and then calls Cut as after any other cut.
func (fs *FS) Err() error {
	select {
	case <-fs.proc.exited:
		return fmt.Errorf("powercut: LazyFS exited: %v\n%s", fs.proc.cmd.ProcessState, fs.proc.out)
	default:
		return nil
	}
}

// Cut cuts the power; see the package comment. Every process using Dir
// must already be dead. If LazyFS died on its own since the last cut, the
// power was cut then: its cache, every unsynced write, died with it, and
// the directory underneath holds exactly what was synced. Cut then only
// mounts again, and says so.
func (fs *FS) Cut() {
	fs.t.Helper()
	if fs.Err() != nil {
		fs.crashes++
		fs.t.Logf("powercut: LazyFS died on its own (%v), which cut the power then; its last words:\n%s",
			fs.proc.cmd.ProcessState, lastLines(fs.proc.out.String(), 4))
		// The dead mount answers nothing: detach it.
		if out, err := exec.Command(fs.fusermount, "-u", "-z", fs.dir).CombinedOutput(); err != nil {
			fs.t.Fatalf("powercut: detaching the dead mount: %v: %s", err, bytes.TrimSpace(out))
		}
		fs.cuts++
		fs.mount()
		return
	}
	usage := fs.cacheUsage()
	fs.peak = max(fs.peak, usage)
	if usage >= 100 {
		fs.t.Fatalf("powercut: LazyFS's cache (%s) is full: writes went straight to disk and survive the cut; raise cacheSize", cacheSize)
	}
	fs.command("lazyfs::clear-cache")
	fs.done.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		line, err := fs.doneLines.ReadString('\n')
		if err != nil {
			fs.t.Fatalf("powercut: LazyFS did not report the cache cleared: %v\n%s", err, fs.proc.out)
		}
		if line == "finished::clear-cache\n" {
			break
		}
	}
	// Whatever the kernel still holds for the mount (page cache, dirty
	// mmap pages of the killed process) goes to LazyFS's cache during the
	// unmount and dies with the LazyFS process.
	if err := fs.unmount(); err != nil {
		fs.t.Fatalf("powercut: %v (is a process still using %s?)", err, fs.dir)
	}
	fs.cuts++
	fs.mount()
}

// mount starts lazyfs and waits until the mount is there.
func (fs *FS) mount() {
	fs.t.Helper()
	p := &process{out: new(testlog.Buffer), exited: make(chan struct{})}
	// LazyFS always aborts when unmounted (its fault thread is never
	// joined): no core dumps. No allow_other: only the user who mounts
	// (root, in CI) uses the mount.
	p.cmd = exec.Command("/bin/sh", "-c", `ulimit -c 0 && exec "$@"`, "lazyfs",
		fs.bin, fs.dir, "--config-path", fs.conf, "-o", "modules=subdir", "-o", "subdir="+fs.root, "-f")
	p.cmd.Dir = fs.base
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// The mount must not outlive the test binary.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := start(p.cmd); err != nil {
		fs.t.Fatalf("powercut: starting LazyFS: %v", err)
	}
	fs.proc = p
	go func() { p.cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, err := isMounted(fs.dir)
		if err != nil {
			fs.t.Fatal(err)
		}
		if ok {
			return
		}
		select {
		case <-p.exited:
			fs.t.Fatalf("powercut: LazyFS exited without mounting %s: %v\n%s", fs.dir, p.cmd.ProcessState, p.out)
		default:
		}
		if time.Now().After(deadline) {
			fs.t.Fatalf("powercut: LazyFS did not mount %s within 30 s:\n%s", fs.dir, p.out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// starter starts processes from one OS thread that lives as long as the
// test binary: the kernel sends Pdeathsig when the thread that started the
// child exits, not its process, and Go ends a thread when a goroutine
// locked to it returns.
var starter = sync.OnceValue(func() chan<- startRequest {
	ch := make(chan startRequest)
	go func() {
		runtime.LockOSThread()
		for req := range ch {
			req.err <- req.cmd.Start()
		}
	}()
	return ch
})

type startRequest struct {
	cmd *exec.Cmd
	err chan<- error
}

func start(cmd *exec.Cmd) error {
	err := make(chan error)
	starter() <- startRequest{cmd, err}
	return <-err
}

// unmount unmounts and waits for lazyfs to exit. When the mount stays busy
// it detaches it lazily and kills lazyfs, so that nothing stays behind,
// and reports the error.
func (fs *FS) unmount() error {
	p := fs.proc
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, uerr := exec.Command(fs.fusermount, "-u", fs.dir).CombinedOutput()
		mounted, merr := isMounted(fs.dir)
		if uerr == nil || (merr == nil && !mounted) {
			break
		}
		if time.Now().After(deadline) {
			err = fmt.Errorf("fusermount3 -u %s: %v: %s", fs.dir, uerr, bytes.TrimSpace(out))
			exec.Command(fs.fusermount, "-u", "-z", fs.dir).Run()
			p.cmd.Process.Kill()
			break
		}
		// A process that has just exited may hold the mount a moment longer.
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		if err == nil {
			err = fmt.Errorf("LazyFS did not exit within 10 s of unmounting %s; killed it", fs.dir)
		}
	}
	return err
}

// close is the test's cleanup: unmount, whatever state the test left.
func (fs *FS) close() {
	if fs.proc != nil {
		select {
		case <-fs.proc.exited:
			// Dead already (it crashed, or a Cut failed halfway): only the
			// mount may be left.
			exec.Command(fs.fusermount, "-u", "-z", fs.dir).Run()
			fs.t.Logf("powercut: LazyFS had exited before the end of the test: %v", fs.proc.cmd.ProcessState)
		default:
			if err := fs.unmount(); err != nil {
				fs.t.Errorf("powercut: cleanup: %v", err)
			}
		}
		if fs.t.Failed() {
			fs.t.Logf("LazyFS output (last mount):\n%s", fs.proc.out)
		}
	}
	fs.done.Close()
	fs.t.Logf("powercut: %d cuts (%d of them LazyFS dying on its own); LazyFS's cache peaked at %.1f%% of %s", fs.cuts, fs.crashes, fs.peak, cacheSize)
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// command writes a command to LazyFS's FIFO. LazyFS reads commands in
// chunks and expects one per read: send the next only once this one is
// done.
func (fs *FS) command(cmd string) {
	fs.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Non-blocking: fails with ENXIO until LazyFS has opened the FIFO.
		f, err := os.OpenFile(fs.faults, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			_, err = f.WriteString(cmd + "\n")
			f.Close()
			if err != nil {
				fs.t.Fatalf("powercut: sending %s: %v", cmd, err)
			}
			return
		}
		if !errors.Is(err, syscall.ENXIO) || time.Now().After(deadline) {
			fs.t.Fatalf("powercut: sending %s: %v\n%s", cmd, err, fs.proc.out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cacheUsage asks LazyFS how full its cache is, in percent of its pages.
func (fs *FS) cacheUsage() float64 {
	fs.t.Helper()
	const marker = "cache usage (%pages) is "
	before := strings.Count(fs.proc.out.String(), marker)
	fs.command("lazyfs::display-cache-usage")
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := fs.proc.out.String()
		if strings.Count(out, marker) > before {
			rest := out[strings.LastIndex(out, marker)+len(marker):]
			num, _, _ := strings.Cut(rest, "%")
			usage, err := strconv.ParseFloat(num, 64)
			if err != nil {
				fs.t.Fatalf("powercut: LazyFS's cache usage %q: %v", num, err)
			}
			return usage
		}
		if time.Now().After(deadline) {
			fs.t.Fatalf("powercut: LazyFS did not report its cache usage:\n%s", out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// build returns the lazyfs binary, building it first unless this version
// of the source was built before. Builds are cached under the user's cache
// directory, keyed by the source's hash, and serialized by a lock file so
// that test binaries running at once build it once.
func build(t testing.TB) string {
	t.Helper()
	tarball, err := source.ReadFile("lazyfs/lazyfs-src.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	script, err := source.ReadFile("lazyfs/build.sh")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write(tarball)
	h.Write(script)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "ralph-lazyfs", hex.EncodeToString(h.Sum(nil))[:16])
	out := filepath.Join(dir, "out")
	bin := filepath.Join(out, "lazyfs", "lazyfs", "build", "lazyfs")
	built := filepath.Join(dir, "built") // written once a build succeeded
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close() // and with it the lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(built); err == nil {
		return bin
	}
	checkBuildDeps(t)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"lazyfs-src.tar.gz": tarball, "build.sh": script} {
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if b, err := exec.Command("sh", filepath.Join(src, "build.sh"), out).CombinedOutput(); err != nil {
		t.Fatalf("powercut: building LazyFS failed (it needs Debian's %s): %v\n%s", debianPackages, err, b)
	}
	if err := os.WriteFile(built, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("powercut: built LazyFS in %v: %s", time.Since(start).Round(time.Second), bin)
	return bin
}

// checkBuildDeps fails the test with the packages to install when
// something LazyFS's build needs is missing.
func checkBuildDeps(t testing.TB) {
	t.Helper()
	var missing []string
	for _, cmd := range []string{"cmake", "make", "g++", "tar", "sed"} {
		if _, err := exec.LookPath(cmd); err != nil {
			missing = append(missing, cmd)
		}
	}
	for _, f := range []string{"/usr/include/fuse3/fuse.h", "/usr/include/toml.hpp", "/usr/include/spdlog/spdlog.h"} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("powercut: building LazyFS needs %s: apt-get install -y %s", strings.Join(missing, ", "), debianPackages)
	}
}

// isMounted reports whether dir is a LazyFS mount point.
func isMounted(dir string) (bool, error) {
	ms, err := lazyfsMounts()
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m == dir {
			return true, nil
		}
	}
	return false, nil
}

// lazyfsMounts lists the mount points of the LazyFS mounts.
func lazyfsMounts() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var ms []string
	for line := range strings.Lines(string(b)) {
		// ID parent major:minor root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) || f[sep+1] != "fuse.lazyfs" {
			continue
		}
		ms = append(ms, unescapeMountPath(f[4]))
	}
	return ms, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeDeadMounts detaches LazyFS mounts whose process is gone (their
// mount point answers ENOTCONN): a test binary killed by go test's timeout
// leaves them. Live mounts, perhaps another test binary's, are left alone.
func removeDeadMounts(t testing.TB, fusermount string) {
	t.Helper()
	ms, err := lazyfsMounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if _, err := os.Stat(m); errors.Is(err, syscall.ENOTCONN) {
			out, err := exec.Command(fusermount, "-u", "-z", m).CombinedOutput()
			t.Logf("powercut: removed a dead LazyFS mount %s: %v %s", m, err, bytes.TrimSpace(out))
		}
	}
}
