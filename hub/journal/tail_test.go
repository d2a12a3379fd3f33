package journal

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/internal/testclock"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// decodedBatch is a batch whose events come with their decoded form, as
// ingest queues them.
func decodedBatch(t *testing.T, epoch string, first, last uint64) *Batch {
	t.Helper()
	b := &Batch{Producer: "agent:a1", Epoch: epoch, Agent: &AgentInfo{ID: "a1", Plant: "DE-01"}, LastSequence: last}
	for s := first; s <= last; s++ {
		ev := &pb.Event{Id: fmt.Sprintf("ev-%d", s), Sequence: s, Plant: "DE-01", Type: "production.completion"}
		raw, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		b.Events = append(b.Events, Incoming{Sequence: s, ID: ev.Id, Raw: raw, Decoded: ev})
	}
	return b
}

func TestReadDecodedHandsOverOnceAndAgreesWithRead(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))}
	j := open(t, filepath.Join(t.TempDir(), "journal.db"), c, Retention{})
	defer j.Close()
	ctx := context.Background()
	in := decodedBatch(t, "e1", 1, 10)
	if _, err := j.Commit(ctx, in); err != nil {
		t.Fatal(err)
	}
	// A duplicate by id is not journaled, so it never reaches the tail.
	dup := decodedBatch(t, "e2", 3, 3)
	if o, err := j.Commit(ctx, dup); err != nil || o.Duplicates != 1 {
		t.Fatalf("duplicate: %+v %v", o, err)
	}

	got, err := j.ReadDecoded(2, 5)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := j.Read(2, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || len(stored) != 5 {
		t.Fatalf("ReadDecoded gave %d records, Read %d; want 5 each", len(got), len(stored))
	}
	for i := range got {
		g, s := got[i], stored[i]
		if g.Decoded != in.Events[i+2].Decoded {
			t.Errorf("record %d: Decoded is not the event ingest queued", g.Position)
		}
		if !proto.Equal(g.Decoded, mustDecode(t, s.Event)) {
			t.Errorf("record %d: Decoded differs from the stored event", g.Position)
		}
		g.Decoded = nil
		if fmt.Sprint(g) != fmt.Sprint(s) || !g.ReceivedAt.Equal(s.ReceivedAt) || g.ReceivedAt.Location() != s.ReceivedAt.Location() {
			t.Errorf("record %d from memory differs from storage:\n memory  %+v\n storage %+v", g.Position, g, s)
		}
	}
	// Handed over once: asking again gives the records from storage.
	again, err := j.ReadDecoded(2, 5)
	if err != nil || len(again) != 5 {
		t.Fatalf("second ReadDecoded: %d records, %v", len(again), err)
	}
	for _, r := range again {
		if r.Decoded != nil {
			t.Errorf("record %d handed over twice", r.Position)
		}
	}
	// The rest of the tail is still there.
	rest, err := j.ReadDecoded(7, 100)
	if err != nil || len(rest) != 3 || rest[0].Position != 8 || rest[0].Decoded == nil {
		t.Fatalf("rest of the tail: %+v %v", rest, err)
	}
}

func TestReadDecodedFallsBackBeyondTheTail(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	j := open(t, filepath.Join(t.TempDir(), "journal.db"), c, Retention{MaxAge: time.Hour})
	defer j.Close()
	ctx := context.Background()
	total := uint64(tailMax + 100)
	for first := uint64(1); first <= total; first += 1000 {
		if _, err := j.Commit(ctx, decodedBatch(t, "e1", first, min(first+999, total))); err != nil {
			t.Fatal(err)
		}
	}
	// The oldest records fell out of the tail: read from storage.
	recs, err := j.ReadDecoded(0, 10)
	if err != nil || len(recs) != 10 || recs[0].Position != 1 {
		t.Fatalf("from storage: %d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if r.Decoded != nil {
			t.Fatalf("record %d: Decoded set for a record read from storage", r.Position)
		}
	}
	// Pruned records leave the tail too: the pipeline sees the gap.
	if _, err := j.Commit(ctx, decodedBatch(t, "e2", 1, 2)); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(2 * time.Hour)
	if n, err := j.Prune(); err != nil || n != int(total) {
		t.Fatalf("prune: %d %v", n, err)
	}
	recs, err = j.ReadDecoded(total-5, 10)
	if err != nil || len(recs) != 0 {
		t.Fatalf("after pruning: %d records (want none: all were pruned), %v", len(recs), err)
	}
	if st := j.Stats(); st.Records != 0 {
		t.Fatalf("records left after pruning: %d", st.Records)
	}
}

func mustDecode(t *testing.T, raw []byte) *pb.Event {
	t.Helper()
	ev := &pb.Event{}
	if err := proto.Unmarshal(raw, ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// Commits, the pipeline's ReadDecoded and pruning run at once (run with
// -race): every record is read once, in order, an event handed over
// decoded is never handed over twice, and records pruned meanwhile are
// skipped, never handed over.
func TestReadDecodedWhileCommittingAndPruning(t *testing.T) {
	c := testclock.New(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
	// Pruning runs where the hub runs it: on the committer's goroutine,
	// between commit groups, every millisecond.
	j, err := OpenBolt(BoltOptions{Path: filepath.Join(t.TempDir(), "journal.db"), Retention: Retention{MaxAge: time.Hour, Interval: time.Millisecond}, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	const batches, per = 40, 50
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range batches {
			first := uint64(i*per + 1)
			if _, err := j.Commit(context.Background(), decodedBatch(t, "e1", first, first+per-1)); err != nil {
				t.Error(err)
				return
			}
			if i == batches/2 {
				c.Add(2 * time.Hour) // the first half becomes prunable
			}
		}
	}()
	seen := map[*pb.Event]bool{}
	var next uint64
	for {
		recs, err := j.ReadDecoded(next, 64)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Position <= next {
				t.Fatalf("record %d after %d: out of order", r.Position, next)
			}
			if r.Decoded != nil {
				if seen[r.Decoded] {
					t.Fatalf("record %d: its event handed over twice", r.Position)
				}
				seen[r.Decoded] = true
			}
			next = r.Position
		}
		if next == batches*per {
			break
		}
		select {
		case <-done:
			if len(recs) == 0 && j.Stats().LastPosition == next {
				t.Fatalf("stopped at %d of %d", next, batches*per)
			}
		default:
		}
	}
	<-done
	if len(seen) == 0 {
		t.Error("no event was handed over decoded")
	}
	eventually := time.Now().Add(5 * time.Second)
	for j.Stats().PrunedTotal == 0 && time.Now().Before(eventually) {
		time.Sleep(time.Millisecond)
	}
	if j.Stats().PrunedTotal == 0 {
		t.Error("nothing was pruned: the test did not prune while committing")
	}
}
