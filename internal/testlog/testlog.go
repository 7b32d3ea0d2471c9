// Package testlog collects log output, from a logger or a child process,
// for tests to assert on.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer is a goroutine-safe bytes.Buffer: an io.Writer to log to, read
// back with String.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
