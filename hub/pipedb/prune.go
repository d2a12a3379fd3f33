package pipedb

import (
	"bytes"
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

// PruneChunk deletes, in one transaction, the records that judge condemns
// among those of the bucket bucket returns whose uint64 keys follow after,
// oldest first, looking at up to limit of them. When limit cut the scan
// short, more is set and next is where to go on from. A short transaction
// per chunk keeps the pipeline's commits from waiting long behind a
// pruning pass. An error names the record as what followed by its key
// ("exception " gives "exception 7: ...").
func (d *DB) PruneChunk(what string, bucket func(tx *bolt.Tx) (*bolt.Bucket, error), after uint64, limit int,
	judge func(v []byte) (Verdict, error)) (n int, next uint64, more bool, err error) {
	next = after
	err = d.Update(func(tx *bolt.Tx) error {
		b, err := bucket(tx)
		if err != nil {
			return err
		}
		var doomed [][]byte
		c := b.Cursor()
		scanned := 0
		for k, v := c.Seek(boltkv.U64(after + 1)); k != nil; k, v = c.Next() {
			if scanned == limit {
				more = true
				break
			}
			verdict, err := judge(v)
			if err != nil {
				return fmt.Errorf("%s%d: %w", what, boltkv.ToU64(k), err)
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
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(doomed)
		return nil
	})
	if err != nil {
		return 0, after, false, err
	}
	return n, next, more, nil
}
