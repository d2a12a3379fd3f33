package pipedb

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestCounterMirrorsOnlyCommittedChanges(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := NewCounter([]byte("open"))
	update := func(delta int, fail bool) {
		err := db.Update(func(tx *bolt.Tx) error {
			m, err := tx.CreateBucketIfNotExists([]byte("meta"))
			if err != nil {
				return err
			}
			if err := c.Add(m, delta); err != nil {
				return err
			}
			if fail {
				return errors.New("rolled back")
			}
			return nil
		})
		if fail {
			c.Discard()
		} else if err == nil {
			c.Committed()
		}
	}
	update(3, false)
	update(5, true) // rolled back: neither file nor mirror change
	update(-1, false)
	if c.Value() != 2 {
		t.Fatalf("mirror = %d, want 2", c.Value())
	}
	update(-10, false) // never below zero
	reopened := NewCounter([]byte("open"))
	_ = db.View(func(tx *bolt.Tx) error { reopened.Load(tx.Bucket([]byte("meta"))); return nil })
	if c.Value() != 0 || reopened.Value() != 0 {
		t.Fatalf("after -10: mirror %d, file %d; want 0 and 0", c.Value(), reopened.Value())
	}
}
