package pipedb

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// PruneChunk looks at limit records per call, resumes after the last one
// it looked at, deletes what judge condemns, stops at the first record
// judge calls too young, and names a record it cannot judge.
func TestPruneChunk(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	name := []byte("records")
	// Values: "d" may go, "k" stays, "y" is too young (and all after it).
	values := "dkddkdyd"
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(name)
		if err != nil {
			return err
		}
		for i, v := range values {
			if err := b.Put(boltkv.U64(uint64(i+1)), []byte{byte(v)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	bucket := func(tx *bolt.Tx) (*bolt.Bucket, error) { return tx.Bucket(name), nil }
	judge := func(v []byte) (Verdict, error) {
		switch v[0] {
		case 'd':
			return Delete, nil
		case 'y':
			return Stop, nil
		case 'k':
			return Keep, nil
		}
		return Keep, errors.New("unreadable")
	}
	var after uint64
	total, calls := 0, 0
	for more := true; more; calls++ {
		var n int
		n, after, more, err = db.PruneChunk("record ", bucket, after, 2, judge)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	// Six records before the young one, two per call, and a last call that
	// meets the young one at once.
	if total != 4 || calls != 4 || after != 6 {
		t.Errorf("deleted %d in %d calls, ending after %d; want 4 in 4, after 6", total, calls, after)
	}
	var left strings.Builder
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(name).ForEach(func(_, v []byte) error { left.Write(v); return nil })
	})
	if err != nil || left.String() != "kkyd" {
		t.Errorf("left %q, %v; want kkyd", left.String(), err)
	}

	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(name).Put(boltkv.U64(1), []byte("?")) }); err != nil {
		t.Fatal(err)
	}
	if _, next, _, err := db.PruneChunk("record ", bucket, 0, 10, judge); err == nil || !strings.Contains(err.Error(), "record 1: unreadable") || next != 0 {
		t.Errorf("unreadable record: next %d, %v; want record 1 named and next 0", next, err)
	}
}
