package exceptions

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/pipedb"
)

func openStore(t *testing.T, path string) (*pipedb.DB, *Bolt) {
	t.Helper()
	db, err := pipedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	b, err := OpenBolt(db)
	if err != nil {
		t.Fatal(err)
	}
	return db, b
}

// add stores exceptions 1..n; those whose id is in resolved are resolved.
func add(t *testing.T, db *pipedb.DB, b *Bolt, n int, resolved ...uint64) {
	t.Helper()
	err := db.Update(func(tx *bolt.Tx) error {
		for i := range n {
			e := &Exception{Kind: "unmapped_item", Reason: fmt.Sprintf("item %d unmapped", i+1), CreatedAt: time.Date(2026, 11, 27, 10, i, 0, 0, time.UTC)}
			if slices.Contains(resolved, uint64(i+1)) {
				e.State = StateResolved
			}
			if err := b.AddTx(tx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func ids(t *testing.T, b *Bolt, f Filter) []uint64 {
	t.Helper()
	es, err := b.List(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func setState(t *testing.T, db *pipedb.DB, b *Bolt, id uint64, st State) {
	t.Helper()
	err := db.Update(func(tx *bolt.Tx) error {
		e, err := b.GetTx(tx, id)
		if err != nil {
			return err
		}
		e.State = st
		return b.PutTx(tx, e)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The open list follows every state change, pages with Before, and agrees
// with a scan of all exceptions.
func TestOpenListFollowsStateChanges(t *testing.T) {
	db, b := openStore(t, filepath.Join(t.TempDir(), "pipeline.db"))
	add(t, db, b, 6, 2, 5)
	setState(t, db, b, 3, StateResolved)
	setState(t, db, b, 5, StateOpen)
	want := []uint64{6, 5, 4, 1}
	if got := ids(t, b, Filter{}); !slices.Equal(got, want) {
		t.Errorf("open = %v, want %v", got, want)
	}
	if got := ids(t, b, Filter{Before: 5, Limit: 1}); !slices.Equal(got, []uint64{4}) {
		t.Errorf("open before 5, limit 1 = %v, want [4]", got)
	}
	// Paging from a resolved id, or from beyond the newest.
	if got := ids(t, b, Filter{Before: 3}); !slices.Equal(got, []uint64{1}) {
		t.Errorf("open before 3 (resolved) = %v, want [1]", got)
	}
	if got := ids(t, b, Filter{Before: 100}); !slices.Equal(got, []uint64{6, 5, 4, 1}) {
		t.Errorf("open before 100 = %v, want all open", got)
	}
	if got := ids(t, b, Filter{State: "all", Before: 100, Limit: 2}); !slices.Equal(got, []uint64{6, 5}) {
		t.Errorf("all before 100, limit 2 = %v", got)
	}
	if got := ids(t, b, Filter{State: "resolved"}); !slices.Equal(got, []uint64{3, 2}) {
		t.Errorf("resolved = %v, want [3 2]", got)
	}
	if got := ids(t, b, Filter{State: "all"}); !slices.Equal(got, []uint64{6, 5, 4, 3, 2, 1}) {
		t.Errorf("all = %v", got)
	}
	if got := ids(t, b, Filter{Reason: "ITEM 4"}); !slices.Equal(got, []uint64{4}) {
		t.Errorf("open with reason = %v, want [4]", got)
	}
	if b.OpenCount() != 4 {
		t.Errorf("open count %d, want 4", b.OpenCount())
	}
}

// A file from before the index (format 1) gets it built on open, and its
// format raised so that an older hub refuses it rather than letting the
// index go stale.
func TestOpenIndexBuiltForAnOlderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pipeline.db")
	db, b := openStore(t, path)
	add(t, db, b, 4, 1, 3)
	// Make it what a format 1 hub left: no index, format 1.
	err := db.DB.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketOpen); err != nil {
			return err
		}
		return pipedb.Meta(tx).Put([]byte("format"), []byte("1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Close()

	db, b = openStore(t, path)
	if got := ids(t, b, Filter{}); !slices.Equal(got, []uint64{4, 2}) {
		t.Errorf("open after building the index = %v, want [4 2]", got)
	}
	var format int
	_ = db.View(func(tx *bolt.Tx) error { format = pipedb.Format(tx); return nil })
	if format != 2 {
		t.Errorf("format %d after the migration, want 2", format)
	}
}
