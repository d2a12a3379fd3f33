package syncbuf

import (
	"fmt"
	"sync"
	"testing"
)

// Writers on several goroutines lose nothing; Tail is the last lines.
func TestConcurrentWritesAndTail(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				fmt.Fprintf(&b, "g%d-%03d\n", g, i)
			}
		}()
	}
	wg.Wait()
	if n := len(b.String()); n != 4*100*len("g0-000\n") {
		t.Fatalf("%d bytes written, want %d", n, 4*100*len("g0-000\n"))
	}
	var c Buffer
	fmt.Fprint(&c, "a\nb\nc\n")
	if got := c.Tail(2); got != "b\nc" {
		t.Errorf("Tail(2) = %q", got)
	}
	if got := c.Tail(9); got != "a\nb\nc" {
		t.Errorf("Tail(9) = %q", got)
	}
}
