package journal

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/internal/boltkv"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// pruneChunk bounds one pruning transaction so commits are never held long.
const pruneChunk = 10000

// Prune deletes records beyond the retention bounds, oldest first, with
// their dedup index entries, and returns how many it deleted. It runs on the
// committer goroutine, between commit groups (both keep the journal's
// counts), as the pass every Retention.Interval does.
func (j *Bolt) Prune() (int, error) {
	reply := make(chan pruneResult, 1)
	j.sendMu.RLock()
	closed := j.closed
	j.sendMu.RUnlock()
	if closed {
		return 0, ErrClosed
	}
	select {
	case j.pruneReqs <- reply:
	case <-j.closing:
		return 0, ErrClosed
	}
	r := <-reply
	return r.n, r.err
}

type pruneResult struct {
	n   int
	err error
}

// prune is Prune on the committer goroutine.
func (j *Bolt) prune() (int, error) {
	total := 0
	for {
		n, more, err := j.pruneOnce()
		total += n
		if err != nil || !more {
			if total > 0 {
				j.log.Info("journal pruned", "records", total)
			}
			return total, err
		}
	}
}

func (j *Bolt) pruneOnce() (n int, more bool, err error) {
	r := j.opts.Retention
	var pruned uint64 // the newest position deleted
	cutoff := j.opts.Now().Add(-r.MaxAge)
	var st Stats
	err = j.db.Update(func(tx *bolt.Tx) error {
		st = j.Stats()
		meta, jb, ids := tx.Bucket(bucketMeta), tx.Bucket(bucketJournal), tx.Bucket(bucketIDs)
		c := jb.Cursor()
		for k, v := c.First(); k != nil; k, v = c.First() {
			if n >= pruneChunk {
				more = true
				break
			}
			overBytes := r.MaxBytes > 0 && st.Bytes > r.MaxBytes
			var rec pb.JournalRecord
			if err := proto.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("%w: record %d: %v", ErrCorrupt, binary.BigEndian.Uint64(k), err)
			}
			overAge := r.MaxAge > 0 && rec.GetReceivedAt().AsTime().Before(cutoff)
			if !overBytes && !overAge {
				break
			}
			if err := ids.Delete([]byte(rec.GetEventId())); err != nil {
				return err
			}
			st.Bytes -= int64(len(v) + 8)
			st.Records--
			pruned = binary.BigEndian.Uint64(k)
			if err := jb.Delete(k); err != nil {
				return err
			}
			n++
		}
		st.FirstPosition = 0
		if k, _ := c.First(); k != nil {
			st.FirstPosition = binary.BigEndian.Uint64(k)
		}
		st.PrunedTotal += uint64(n)
		if err := boltkv.PutU64(meta, keyCount, st.Records); err != nil {
			return err
		}
		return boltkv.PutU64(meta, keyBytes, uint64(st.Bytes))
	})
	if err != nil {
		return 0, false, err
	}
	j.mu.Lock()
	// Commits run on the same goroutine, so nothing changed stats meanwhile.
	j.stats = st
	if n > 0 {
		j.dropTail(pruned + 1)
	}
	j.mu.Unlock()
	return n, more, nil
}
