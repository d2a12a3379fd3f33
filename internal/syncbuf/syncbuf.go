// Package syncbuf is a bytes.Buffer that several goroutines may write and
// read at once: tests hand it to loggers and child processes and read what
// they wrote.
package syncbuf

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer collects writes under a lock.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Tail is the last n lines written, for a failure message.
func (l *Buffer) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.String(), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
