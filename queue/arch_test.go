package queue

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// TestThirtyTwoBit runs this package's tests built for 386, natively, as a
// stand-in for the armhf build: 32-bit platforms hit bugs 64-bit ones do
// not. One such (ristretto's allocator, see badgerOptions) corrupted
// Badger tables after about 100,000 messages; TestReclaimAfterDrain found
// it.
func TestThirtyTwoBit(t *testing.T) {
	if runtime.GOARCH != "amd64" || runtime.GOOS != "linux" {
		t.Skipf("runs 386 binaries on linux/amd64 only, not %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	if testing.Short() {
		t.Skip("builds the package for 386: not in -short")
	}
	bin := filepath.Join(t.TempDir(), "queue-386.test")
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	build.Env = append(os.Environ(), "GOARCH=386", "CGO_ENABLED=0", "GOFLAGS=") // no -race on 386
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the tests for 386: %v\n%s", err, out)
	}
	run := exec.Command(bin, "-test.count=1")
	out, err := run.CombinedOutput()
	if errors.Is(err, syscall.ENOEXEC) {
		t.Skipf("this kernel cannot run 386 binaries: %v", err)
	}
	if err != nil || !strings.Contains(string(out), "PASS") {
		t.Fatalf("the queue's tests fail on 386: %v\n%s", err, tail(out, 4000))
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
