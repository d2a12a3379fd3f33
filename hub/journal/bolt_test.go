package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, path string, c *clock, r Retention) *Bolt {
	t.Helper()
	j, err := OpenBolt(BoltOptions{Path: path, Retention: r, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func agentBatch(epoch string, first, last uint64, idPrefix string) *Batch {
	b := &Batch{Producer: "agent:a1", Epoch: epoch, Agent: &AgentInfo{ID: "a1", Plant: "DE-01"}, LastSequence: last}
	for s := first; s <= last; s++ {
		b.Events = append(b.Events, Incoming{Sequence: s, ID: fmt.Sprintf("%s-%d", idPrefix, s), Raw: []byte("x")})
	}
	return b
}

func TestDedupBySequenceAndByID(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "journal.db")
	j := open(t, path, c, Retention{})
	ctx := context.Background()

	o, err := j.Commit(ctx, agentBatch("e1", 1, 10, "ev"))
	if err != nil || o.Journaled != 10 || o.Watermark != 10 {
		t.Fatalf("first batch: %+v %v", o, err)
	}
	// A resent overlapping batch: 1..10 are dropped by watermark.
	o, err = j.Commit(ctx, agentBatch("e1", 5, 15, "ev"))
	if err != nil || o.Journaled != 5 || o.Duplicates != 6 || o.Watermark != 15 {
		t.Fatalf("overlapping batch: journaled %d dup %d wm %d %v", o.Journaled, o.Duplicates, o.Watermark, err)
	}
	// A new epoch resending the same event ids (a redelivered broker
	// message after a lost buffer) is dropped by id.
	o, err = j.Commit(ctx, agentBatch("e2", 1, 3, "ev"))
	if err != nil || o.Journaled != 0 || o.Duplicates != 3 || o.Results[0].Position != 1 {
		t.Fatalf("new epoch, same ids: %+v %v", o, err)
	}
	if w, _ := j.Resume("agent:a1", "e2"); w != 3 {
		t.Fatalf("resume e2 = %d, want 3 (the epoch advanced even though all were duplicates)", w)
	}
	// Rejected events are kept apart and still advance the watermark.
	b := agentBatch("e2", 4, 5, "new")
	b.Events[1].Rejected = `plant "FR-02" not allowed for agent a1`
	o, err = j.Commit(ctx, b)
	if err != nil || o.Journaled != 1 || o.Rejected != 1 || o.Watermark != 5 {
		t.Fatalf("rejected: %+v %v", o, err)
	}
	rej, _ := j.Rejected(0, 10)
	if len(rej) != 1 || rej[0].Reason == "" || rej[0].EventID != "new-5" {
		t.Fatalf("rejected store = %+v", rej)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j = open(t, path, c, Retention{})
	defer j.Close()
	recs, err := j.Read(0, 100)
	if err != nil || len(recs) != 16 {
		t.Fatalf("after reopen read %d records, %v; want 16", len(recs), err)
	}
	for i, r := range recs {
		if r.Position != uint64(i+1) {
			t.Fatalf("positions not dense: %d at %d", r.Position, i)
		}
	}
	if w, _ := j.Resume("agent:a1", "e1"); w != 15 {
		t.Fatalf("resume e1 after reopen = %d", w)
	}
	agents, _ := j.Agents()
	// Epoch e2: sequences 1-3 were id duplicates, 4 journaled, 5 rejected.
	if len(agents) != 1 || agents[0].Epoch != "e2" || agents[0].LastSequence != 5 || agents[0].Plant != "DE-01" ||
		agents[0].DuplicateEvents != 3 || agents[0].RejectedEvents != 1 {
		t.Fatalf("agents = %+v", agents)
	}
	if st := j.Stats(); st.Records != 16 || st.LastPosition != 16 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestRetentionPrunesJournalAndDedupIndex(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	j := open(t, filepath.Join(t.TempDir(), "journal.db"), c, Retention{MaxAge: 24 * time.Hour})
	defer j.Close()
	ctx := context.Background()
	if _, err := j.Commit(ctx, agentBatch("e1", 1, 100, "old")); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(20 * time.Hour)
	if _, err := j.Commit(ctx, agentBatch("e1", 101, 150, "new")); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(5 * time.Hour) // "old" is 25 h old, "new" 5 h
	n, err := j.Prune()
	if err != nil || n != 100 {
		t.Fatalf("pruned %d, %v; want 100", n, err)
	}
	recs, _ := j.Read(0, 1000)
	if len(recs) != 50 || recs[0].Position != 101 {
		t.Fatalf("after prune: %d records from %d", len(recs), recs[0].Position)
	}
	if st := j.Stats(); st.FirstPosition != 101 || st.Records != 50 {
		t.Fatalf("stats after prune: %+v", st)
	}
	// Within retention an id is a duplicate; past it, it is new again.
	o, _ := j.Commit(ctx, &Batch{Producer: "partner:p", Events: []Incoming{{ID: "new-120", Raw: []byte("x")}, {ID: "old-5", Raw: []byte("x")}}})
	if o.Results[0].Status != StatusDuplicate || o.Results[1].Status != StatusJournaled {
		t.Fatalf("dedup after prune: %+v", o.Results)
	}
}

func TestRetentionByBytes(t *testing.T) {
	c := &clock{t: time.Now()}
	j := open(t, filepath.Join(t.TempDir(), "journal.db"), c, Retention{MaxBytes: 2000})
	defer j.Close()
	if _, err := j.Commit(context.Background(), agentBatch("e1", 1, 500, "ev")); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Prune(); err != nil {
		t.Fatal(err)
	}
	st := j.Stats()
	if st.Bytes > 2000 || st.Records == 0 || st.LastPosition != 500 {
		t.Fatalf("after byte prune: %+v", st)
	}
	recs, _ := j.Read(0, 1000)
	if recs[len(recs)-1].Position != 500 {
		t.Fatal("pruning by bytes must keep the newest")
	}
}

// A journal file cut short (a full disk, a copy that stopped) is refused
// with ErrCorrupt naming the file and the fix; bbolt alone faulted on its
// freelist page beyond the end, a fatal crash of the hub.
func TestTruncatedJournalRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := OpenBolt(BoltOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for b := range 50 {
		evs := make([]Incoming, 100)
		for i := range evs {
			evs[i] = Incoming{ID: fmt.Sprintf("e-%d-%d", b, i), Raw: make([]byte, 500)}
		}
		if _, err := j.Commit(context.Background(), &Batch{Producer: "p", Epoch: "e", Events: evs}); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()/3); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBolt(BoltOptions{Path: path}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "is truncated") ||
		!strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("open of a truncated journal: %v", err)
	}
}
