package pipedb

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// Verdict is what a pruning scan decides for one record.
type Verdict int

// Verdicts.
const (
	// Keep leaves the record and goes on.
	Keep Verdict = iota
	// Delete deletes the record and goes on.
	Delete
	// Stop ends the scan before this record: it and every later one are
	// too young (records are keyed in the order they were made).
	Stop
)

// ByAge judges a record made at created and finished at done (nil: not
// finished, it stays): Stop once records are as young as cutoff, Delete
// when it finished before cutoff.
func ByAge(cutoff, created time.Time, done *time.Time) Verdict {
	switch {
	case !created.Before(cutoff):
		return Stop
	case done != nil && done.Before(cutoff):
		return Delete
	}
	return Keep
}

// Chunk is what one PruneChunk did: N records deleted; Next is the key to
// go on after, More whether limit cut the scan short; Unreadable lists the
// records kept because Judge could not read them (each wraps
// ErrUnreadable and names the record).
type Chunk struct {
	N          int
	Next       uint64
	More       bool
	Unreadable []error
}

// ErrUnreadable marks a record a pruning scan could not judge: it is kept
// and the scan goes on.
var ErrUnreadable = errors.New("unreadable record kept")

// Pruner says which records of a uint64-keyed bucket may go.
type Pruner struct {
	// What names a record in errors, followed by its key: "exception ".
	What string
	// Bucket finds the bucket in a transaction.
	Bucket func(tx *bolt.Tx) (*bolt.Bucket, error)
	// Judge decides for one record; it may read other buckets of tx.
	Judge func(tx *bolt.Tx, k, v []byte) (Verdict, error)
	// Gone, when set, runs in the deleting transaction for each record
	// before it is deleted (to delete what only it refers to).
	Gone func(tx *bolt.Tx, k, v []byte) error
}

// PruneChunk looks at up to limit records whose keys follow after, oldest
// first, in a read transaction, then deletes those Judge condemned in a
// short write transaction, judging each again there (it may have changed
// in between). A pass that finds nothing to delete never takes the write
// lock, so the pipeline's commits do not wait for it. A record Judge
// cannot read is kept and reported; the scan goes on past it.
func (d *DB) PruneChunk(p Pruner, after uint64, limit int) (Chunk, error) {
	c := Chunk{Next: after}
	var doomed [][]byte
	err := d.View(func(tx *bolt.Tx) error {
		b, err := p.Bucket(tx)
		if err != nil {
			return err
		}
		cur := b.Cursor()
		scanned := 0
		for k, v := cur.Seek(boltkv.U64(after + 1)); k != nil; k, v = cur.Next() {
			if scanned == limit {
				c.More = true
				break
			}
			verdict, err := p.Judge(tx, k, v)
			if err != nil {
				c.Unreadable = append(c.Unreadable, fmt.Errorf("%w: %s%d: %v", ErrUnreadable, p.What, boltkv.ToU64(k), err))
				verdict = Keep
			}
			if verdict == Stop {
				break
			}
			scanned++
			c.Next = boltkv.ToU64(k)
			if verdict == Delete {
				doomed = append(doomed, bytes.Clone(k))
			}
		}
		return nil
	})
	if err != nil {
		return Chunk{Next: after}, err
	}
	if len(doomed) == 0 {
		return c, nil
	}
	c.N, err = d.DeleteIf(p.Bucket, doomed, func(tx *bolt.Tx, k, v []byte) (bool, error) {
		if verdict, err := p.Judge(tx, k, v); err != nil || verdict != Delete {
			return false, nil
		}
		if p.Gone != nil {
			return true, p.Gone(tx, k, v)
		}
		return true, nil
	})
	if err != nil {
		return Chunk{Next: after}, err
	}
	return c, nil
}

// DeleteIf deletes, in one write transaction, those of keys (found in a
// read transaction before) that still exist and that still says may go;
// still may also delete what only that record refers to. It returns how
// many it deleted.
func (d *DB) DeleteIf(bucket func(tx *bolt.Tx) (*bolt.Bucket, error), keys [][]byte, still func(tx *bolt.Tx, k, v []byte) (bool, error)) (n int, err error) {
	err = d.Update(func(tx *bolt.Tx) error {
		b, err := bucket(tx)
		if err != nil {
			return err
		}
		n = 0
		for _, k := range keys {
			v := b.Get(k)
			if v == nil {
				continue
			}
			ok, err := still(tx, k, v)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if err := b.Delete(k); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
