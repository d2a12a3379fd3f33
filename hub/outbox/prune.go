package outbox

import (
	"fmt"
	"time"

	segjson "github.com/segmentio/encoding/json"
	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/pipedb"
	"github.com/plantsync/plantsync/internal/boltkv"
)

// PruneDelivered deletes delivered entries of dest created before cutoff,
// looking at up to limit entries after seq after, oldest first. Pending and
// failed entries stay whatever their age: they are still owed a delivery or
// a person's decision. Entries are appended in time order, so the scan ends
// at the first entry created at or after cutoff. Sequence numbers are never
// reused (the next one is kept apart from the entries). When limit cut the
// scan short, more is set and next is where to go on from.
func (b *Bolt) PruneDelivered(dest string, cutoff time.Time, after uint64, limit int) (pipedb.Chunk, error) {
	return b.db.PruneChunk(pipedb.Pruner{
		What: "outbox entry " + dest + "/",
		Bucket: func(tx *bolt.Tx) (*bolt.Bucket, error) {
			db, err := b.destBucket(tx, dest)
			if err != nil {
				return nil, err
			}
			return db.Bucket(bucketEntries), nil
		},
		Judge: func(_ *bolt.Tx, _, v []byte) (pipedb.Verdict, error) {
			created, err := createdAt(v)
			if err != nil {
				return pipedb.Keep, err
			}
			// Delivered entries count as done when made: entries are
			// appended in time order.
			var done *time.Time
			if stateOf(v[0]) == StateDelivered {
				done = &created
			}
			return pipedb.ByAge(cutoff, created, done), nil
		},
	}, after, limit)
}

// DeleteFailedTx deletes entry seq of dest if it is failed (a failed entry
// is not pending, so no count changes); one in any other state, or gone,
// stays as it is. The pipeline calls it when retention prunes the resolved
// exception that parked the entry: nothing could replay it any more.
func (b *Bolt) DeleteFailedTx(tx *bolt.Tx, dest string, seq uint64) error {
	db, err := b.destBucket(tx, dest)
	if err != nil {
		return nil // a destination no longer configured keeps nothing
	}
	eb := db.Bucket(bucketEntries)
	if v := eb.Get(boltkv.U64(seq)); len(v) == 0 || stateOf(v[0]) != StateFailed {
		return nil
	}
	return eb.Delete(boltkv.U64(seq))
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
