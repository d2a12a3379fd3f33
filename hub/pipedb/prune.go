package pipedb

import (
	"bytes"
	"errors"
	"fmt"

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
// lock, so the pipeline's commits do not wait for it. When limit cut the
// scan short, more is set and next is where to go on from. A record Judge
// cannot read is kept and reported in unreadable (each error wraps
// ErrUnreadable and names the record); the scan goes on past it.
func (d *DB) PruneChunk(p Pruner, after uint64, limit int) (n int, next uint64, more bool, unreadable []error, err error) {
	next = after
	var doomed [][]byte
	err = d.View(func(tx *bolt.Tx) error {
		b, err := p.Bucket(tx)
		if err != nil {
			return err
		}
		c := b.Cursor()
		scanned := 0
		for k, v := c.Seek(boltkv.U64(after + 1)); k != nil; k, v = c.Next() {
			if scanned == limit {
				more = true
				break
			}
			verdict, err := p.Judge(tx, k, v)
			if err != nil {
				unreadable = append(unreadable, fmt.Errorf("%w: %s%d: %v", ErrUnreadable, p.What, boltkv.ToU64(k), err))
				verdict = Keep
			}
			if verdict == Stop {
				break
			}
			scanned++
			next = boltkv.ToU64(k)
			if verdict == Delete {
				doomed = append(doomed, bytes.Clone(k))
			}
		}
		return nil
	})
	if err != nil || len(doomed) == 0 {
		if err != nil {
			return 0, after, false, nil, err
		}
		return 0, next, more, unreadable, nil
	}
	err = d.Update(func(tx *bolt.Tx) error {
		b, err := p.Bucket(tx)
		if err != nil {
			return err
		}
		n = 0
		for _, k := range doomed {
			v := b.Get(k)
			if v == nil {
				continue
			}
			if verdict, err := p.Judge(tx, k, v); err != nil || verdict != Delete {
				continue
			}
			if p.Gone != nil {
				if err := p.Gone(tx, k, v); err != nil {
					return err
				}
			}
			if err := b.Delete(k); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, after, false, nil, err
	}
	return n, next, more, unreadable, nil
}
