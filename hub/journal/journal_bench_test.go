package journal

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
)

// BenchmarkJournalCommit measures durable commits (fsync included) of agent
// batches of 1000 events of about 200 bytes, eight batches in flight as an
// agent stream sends them. One op is one batch. Event ids are time-ordered
// (UUIDv7) or random: an agent derives an MQTT message's id by hashing it,
// which spreads the dedup index inserts over its pages.
func BenchmarkJournalCommit(b *testing.B) {
	b.Run("ids=time-ordered", func(b *testing.B) { benchJournalCommit(b, uuid.NewV7) })
	b.Run("ids=random", func(b *testing.B) { benchJournalCommit(b, uuid.NewRandom) })
}

func benchJournalCommit(b *testing.B, newID func() (uuid.UUID, error)) {
	j, err := OpenBolt(BoltOptions{Path: filepath.Join(b.TempDir(), "journal.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	const perBatch = 1000
	raw := []byte(strings.Repeat("x", 200))
	inflight := make(chan struct{}, 8)
	var wg sync.WaitGroup
	var seq uint64
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		batch := &Batch{Producer: "agent:bench", Epoch: "e1", Agent: &AgentInfo{ID: "bench", Plant: "DE-01"},
			Events: make([]Incoming, perBatch)}
		for i := range batch.Events {
			seq++
			id, _ := newID()
			batch.Events[i] = Incoming{Sequence: seq, ID: id.String(), Raw: raw}
		}
		batch.LastSequence = seq
		inflight <- struct{}{}
		wg.Add(1)
		err := j.CommitAsync(context.Background(), batch, func(_ Outcome, err error) {
			defer wg.Done()
			<-inflight
			if err != nil {
				b.Error(err)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.ReportMetric(float64(b.N*perBatch)/b.Elapsed().Seconds(), "events/s")
	// What the commits wrote, per event (bbolt's page allocations).
	b.ReportMetric(float64(pageAlloc(j))/float64(b.N*perBatch), "written-B/event")
}

func pageAlloc(j *Bolt) int64 {
	st := j.db.Stats()
	return st.TxStats.GetPageAlloc()
}
