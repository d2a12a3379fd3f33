package outbox

import (
	"bytes"
	"fmt"
	"time"

	segjson "github.com/segmentio/encoding/json"
	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// PruneDelivered deletes delivered entries of dest created before cutoff,
// looking at up to limit entries after seq after, oldest first. Pending and
// failed entries stay whatever their age: they are still owed a delivery or
// a person's decision. Entries are appended in time order, so the scan ends
// at the first entry created at or after cutoff. Sequence numbers are never
// reused (the next one is kept apart from the entries). When limit cut the
// scan short, more is set and next is where to go on from.
func (b *Bolt) PruneDelivered(dest string, cutoff time.Time, after uint64, limit int) (n int, next uint64, more bool, err error) {
	next = after
	err = b.db.Update(func(tx *bolt.Tx) error {
		db, err := b.destBucket(tx, dest)
		if err != nil {
			return err
		}
		entries := db.Bucket(bucketEntries)
		var doomed [][]byte
		c := entries.Cursor()
		scanned := 0
		for k, v := c.Seek(boltkv.U64(after + 1)); k != nil; k, v = c.Next() {
			if scanned == limit {
				more = true
				break
			}
			created, err := createdAt(v)
			if err != nil {
				return fmt.Errorf("outbox entry %s/%d: %w", dest, boltkv.ToU64(k), err)
			}
			if !created.Before(cutoff) {
				break
			}
			scanned++
			next = boltkv.ToU64(k)
			if stateOf(v[0]) == StateDelivered {
				doomed = append(doomed, bytes.Clone(k))
			}
		}
		for _, k := range doomed {
			if err := entries.Delete(k); err != nil {
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

// createdAt reads only the creation time of a stored entry.
func createdAt(v []byte) (time.Time, error) {
	if len(v) < 2 {
		return time.Time{}, fmt.Errorf("short value")
	}
	var e struct {
		CreatedAt time.Time `json:"created_at"`
	}
	if err := segjson.Unmarshal(v[1:], &e); err != nil {
		return time.Time{}, err
	}
	return e.CreatedAt, nil
}
