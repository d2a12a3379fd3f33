package outbox

import (
	"encoding/json"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestPruneDeliveredKeepsWhatIsStillOwed(t *testing.T) {
	db, b := openTestOutbox(t, "erp")
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	// Entries 1..6 created a day apart: 1 delivered, 2 failed, 3 pending,
	// 4 and 5 delivered, 6 delivered but newer than the cutoff.
	states := []State{StateDelivered, StateFailed, StatePending, StateDelivered, StateDelivered, StateDelivered}
	err := db.Update(func(tx *bolt.Tx) error {
		app := b.NewAppender(tx)
		for i, st := range states {
			v, err := Encode(&Entry{Destination: "erp", Action: "post", Document: json.RawMessage(`{}`),
				CreatedAt: day.Add(time.Duration(i) * 24 * time.Hour), State: st})
			if err != nil {
				return err
			}
			if _, err := app.Append("erp", v); err != nil {
				return err
			}
		}
		return app.Flush()
	})
	if err != nil {
		t.Fatal(err)
	}
	depth := b.Depth("erp")
	cutoff := day.Add(5 * 24 * time.Hour) // entry 6 is at the cutoff: kept

	// Looking at 2 entries at a time: 1 (pruned) and 2 (failed, kept),
	// then 3 (pending, kept) and 4, then 5; 6 is past the cutoff.
	var total int
	var after uint64
	for i, want := range []struct {
		n    int
		next uint64
		more bool
	}{{1, 2, true}, {1, 4, true}, {1, 5, false}} {
		c, err := b.PruneDelivered("erp", cutoff, after, 2)
		if err != nil || c.Unreadable != nil || c.N != want.n || c.Next != want.next || c.More != want.more {
			t.Fatalf("chunk %d: %+v, %v; want %+v", i+1, c, err, want)
		}
		total, after = total+c.N, c.Next
	}
	if total != 3 {
		t.Fatalf("pruned %d, want 3", total)
	}
	// A new pass from the start looks at the kept entries again and finds
	// nothing more to prune.
	if c, err := b.PruneDelivered("erp", cutoff, 0, 10); err != nil || c.N != 0 || c.More {
		t.Fatalf("second pass: %+v, %v", c, err)
	}
	left := rawEntries(t, db, "erp")
	for seq, want := range map[uint64]bool{1: false, 2: true, 3: true, 4: false, 5: false, 6: true} {
		if _, ok := left[seq]; ok != want {
			t.Errorf("entry %d (%s) kept = %v, want %v", seq, states[seq-1], ok, want)
		}
	}
	if _, err := b.Get("erp", 1); err == nil {
		t.Error("a pruned entry is still found")
	}
	if got := b.Depth("erp"); got != depth {
		t.Errorf("depth %d after pruning, want %d (only delivered entries go)", got, depth)
	}
	// Sequence numbers go on: a new entry never takes a pruned one's.
	appendTestEntries(t, db, b, "erp", 1)
	if _, ok := rawEntries(t, db, "erp")[7]; !ok {
		t.Errorf("the next entry is not 7: %v", rawEntries(t, db, "erp"))
	}
	if _, err := b.PruneDelivered("nowhere", cutoff, 0, 10); err == nil {
		t.Error("an unknown destination is not refused")
	}
}
