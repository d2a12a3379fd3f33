package plugin

import (
	"context"
	"sync"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// acker acknowledges to the plugin the highest seq below which every batch
// is committed, from its own goroutine: the buffer's commit callback must
// not wait for a call into another process.
type acker struct {
	host *sdk.SourceHost

	mu      sync.Mutex
	slots   []slot // batches in send order
	through uint64 // committed prefix, not yet acknowledged
	wake    chan struct{}
	quit    chan struct{}
	wg      sync.WaitGroup
}

type slot struct {
	last uint64
	done bool
}

func newAcker(host *sdk.SourceHost) *acker {
	a := &acker{host: host, wake: make(chan struct{}, 1), quit: make(chan struct{})}
	a.wg.Add(1)
	go a.loop()
	return a
}

// add registers a batch ending at seq last; done(last) completes it.
func (a *acker) add(last uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.slots = append(a.slots, slot{last: last})
}

// done marks the batch ending at last committed and advances the prefix.
func (a *acker) done(last uint64) {
	a.mu.Lock()
	for i := range a.slots {
		if a.slots[i].last == last {
			a.slots[i].done = true
			break
		}
	}
	advanced := false
	for len(a.slots) > 0 && a.slots[0].done {
		a.through = a.slots[0].last
		a.slots = a.slots[1:]
		advanced = true
	}
	a.mu.Unlock()
	if advanced {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

func (a *acker) loop() {
	defer a.wg.Done()
	var sent uint64
	for {
		select {
		case <-a.quit:
			a.flush(&sent)
			return
		case <-a.wake:
			a.flush(&sent)
		}
	}
}

func (a *acker) flush(sent *uint64) {
	a.mu.Lock()
	through := a.through
	a.mu.Unlock()
	if through <= *sent {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A failed ack is harmless: unacknowledged records are sent again by
	// the next Read and keep their event ids.
	if _, err := a.host.Ack(ctx, sdk.AckRequest{Through: through}); err == nil {
		*sent = through
	}
}

// stop acknowledges what is committed and ends the goroutine.
func (a *acker) stop() {
	close(a.quit)
	a.wg.Wait()
}
