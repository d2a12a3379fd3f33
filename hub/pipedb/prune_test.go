package pipedb

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// PruneChunk looks at limit records per call, resumes after the last one
// it looked at, deletes what Judge condemns (running Gone first), stops at
// the first record Judge calls too young, and keeps a record it cannot
// read, naming it, without ending the scan.
func TestPruneChunk(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	name := []byte("records")
	// Values: "d" may go, "k" stays, "?" cannot be read, "y" is too young
	// (and all after it).
	values := "dk?ddkdyd"
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
	var gone []uint64
	p := Pruner{
		What:   "record ",
		Bucket: func(tx *bolt.Tx) (*bolt.Bucket, error) { return tx.Bucket(name), nil },
		Judge: func(_ *bolt.Tx, _, v []byte) (Verdict, error) {
			switch v[0] {
			case 'd':
				return Delete, nil
			case 'y':
				return Stop, nil
			case 'k':
				return Keep, nil
			}
			return Delete, errors.New("unreadable")
		},
		Gone: func(_ *bolt.Tx, k, _ []byte) error { gone = append(gone, boltkv.ToU64(k)); return nil },
	}
	var after uint64
	var bad []error
	total, calls := 0, 0
	for more := true; more; calls++ {
		c, err := db.PruneChunk(p, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		after, more = c.Next, c.More
		total += c.N
		bad = append(bad, c.Unreadable...)
	}
	// Seven records before the young one, two per call, and a last call
	// that meets the young one after one record.
	if total != 4 || calls != 4 || after != 7 {
		t.Errorf("deleted %d in %d calls, ending after %d; want 4 in 4, after 7", total, calls, after)
	}
	if len(gone) != 4 || gone[0] != 1 || gone[3] != 7 {
		t.Errorf("Gone ran for %v, want 1, 4, 5, 7", gone)
	}
	if len(bad) != 1 || !errors.Is(bad[0], ErrUnreadable) || !strings.Contains(bad[0].Error(), "record 3: unreadable") {
		t.Errorf("unreadable: %v; want record 3 named", bad)
	}
	var left strings.Builder
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(name).ForEach(func(_, v []byte) error { left.Write(v); return nil })
	})
	if err != nil || left.String() != "k?kyd" {
		t.Errorf("left %q, %v; want k?kyd", left.String(), err)
	}
}

func TestByAge(t *testing.T) {
	cutoff := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	before, after := cutoff.Add(-time.Hour), cutoff.Add(time.Hour)
	for _, tc := range []struct {
		created time.Time
		done    *time.Time
		want    Verdict
	}{
		{before, &before, Delete},
		{before, nil, Keep},     // not finished
		{before, &after, Keep},  // finished after the cutoff
		{cutoff, &before, Stop}, // as young as the cutoff: it and the rest stay
		{after, nil, Stop},
	} {
		if got := ByAge(cutoff, tc.created, tc.done); got != tc.want {
			t.Errorf("ByAge(created %s, done %v) = %d, want %d", tc.created, tc.done, got, tc.want)
		}
	}
}
