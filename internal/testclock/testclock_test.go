package testclock

import (
	"sync"
	"testing"
	"time"
)

func TestClockMovesAndIsSafeToShare(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	c := New(t0)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				c.Add(time.Second)
				_ = c.Now()
			}
		}()
	}
	wg.Wait()
	if got := c.Now(); !got.Equal(t0.Add(400 * time.Second)) {
		t.Fatalf("clock at %v, want %v", got, t0.Add(400*time.Second))
	}
}
