package mqtt

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// ErrNotQuarantined is returned for a quarantine id that is not (or no
// longer) in the quarantine.
var ErrNotQuarantined = errors.New("no such quarantined message")

// The quarantine keeps messages that could not be decoded or mapped, with
// topic and reason, in a bbolt file of the source's own (quarantine.db in
// its state folder), so an operator can inspect them and replay them after
// fixing the mapping. A message is kept once per topic and payload: a
// redelivery or a repeat raises its count.

var (
	bucketEntries = []byte("entries") // 8-byte id -> JSON entry
	bucketByHash  = []byte("by_hash") // content hash -> 8-byte id
	bucketQMeta   = []byte("meta")
	// keyLastID holds the last id given (files written before held the
	// next one, so one id is skipped once: ids stay unique and rising).
	keyLastID = []byte("next_id")
)

// QuarantineEntry is one quarantined message, as the admin API shows it.
type QuarantineEntry struct {
	ID        uint64    `json:"id,string"`
	Topic     string    `json:"topic"`
	Payload   []byte    `json:"payload"`
	QoS       byte      `json:"qos"`
	Reason    string    `json:"reason"`
	Location  string    `json:"location"`
	Count     uint64    `json:"count"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Hash is the hex content hash; the source.error event id derives from it.
	Hash string `json:"hash"`
}

// quarantine is the store. Writes are fsync'd: a message is acknowledged
// to the broker only after it sits here and its source.error event sits in
// the buffer.
type quarantine struct {
	db         *bolt.DB
	maxEntries int

	mu      sync.Mutex
	entries int
}

// errQuarantineCorrupt marks a quarantine file that is not a whole bbolt
// file.
var errQuarantineCorrupt = errors.New("quarantine file is corrupt")

func openQuarantine(dir string, maxEntries int) (*quarantine, error) {
	path := filepath.Join(dir, "quarantine.db")
	db, err := boltkv.Open(path, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType},
		boltkv.OpenSpec{What: "quarantine", Corrupt: errQuarantineCorrupt, Owner: "is another agent running with the same state_dir?",
			Aside: "to start an empty quarantine (the messages it held are then lost; they were acknowledged)"})
	if err != nil {
		return nil, err
	}
	q := &quarantine{db: db, maxEntries: maxEntries}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEntries, bucketByHash, bucketQMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		q.entries = tx.Bucket(bucketEntries).Stats().KeyN
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open quarantine %s: %w", path, err)
	}
	return q, nil
}

// put stores a message (or counts a repeat of it) and returns its entry.
// evicted tells how many old entries made room.
func (q *quarantine) put(topic string, payload []byte, qos byte, reason, location string, now time.Time) (e QuarantineEntry, evicted int, err error) {
	h := hashMessage(topic, payload)
	q.mu.Lock()
	defer q.mu.Unlock()
	err = q.db.Update(func(tx *bolt.Tx) error {
		entries, byHash, meta := tx.Bucket(bucketEntries), tx.Bucket(bucketByHash), tx.Bucket(bucketQMeta)
		if k := byHash.Get(h[:]); k != nil {
			if raw := entries.Get(k); raw != nil && json.Unmarshal(raw, &e) == nil {
				e.Count++
				e.LastSeen, e.Reason, e.Location = now, reason, location
				return putJSON(entries, k, e)
			}
		}
		id, err := boltkv.NextU64(meta, keyLastID)
		if err != nil {
			return err
		}
		e = QuarantineEntry{ID: id, Topic: topic, Payload: payload, QoS: qos, Reason: reason, Location: location,
			Count: 1, FirstSeen: now, LastSeen: now, Hash: fmt.Sprintf("%x", h[:])}
		if err := putJSON(entries, boltkv.U64(id), e); err != nil {
			return err
		}
		if err := byHash.Put(h[:], boltkv.U64(id)); err != nil {
			return err
		}
		n := q.entries + 1
		c := entries.Cursor()
		evicted = 0
		for k, v := c.First(); k != nil && n > q.maxEntries; k, v = c.First() {
			var old QuarantineEntry
			if json.Unmarshal(v, &old) == nil {
				oh := hashMessage(old.Topic, old.Payload)
				_ = byHash.Delete(oh[:])
			}
			if err := entries.Delete(k); err != nil {
				return err
			}
			n--
			evicted++
		}
		return nil
	})
	if err != nil {
		return QuarantineEntry{}, 0, fmt.Errorf("quarantine: %w", err)
	}
	if e.Count == 1 {
		q.entries += 1 - evicted
	}
	return e, evicted, nil
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

// list returns up to limit entries with ids above after, oldest first.
func (q *quarantine) list(after uint64, limit int) ([]QuarantineEntry, error) {
	var out []QuarantineEntry
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEntries).Cursor()
		for k, v := c.Seek(boltkv.U64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			var e QuarantineEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("entry %x: %w", k, err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

func (q *quarantine) get(id uint64) (QuarantineEntry, error) {
	var e QuarantineEntry
	err := q.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketEntries).Get(boltkv.U64(id))
		if raw == nil {
			return fmt.Errorf("%w: %d", ErrNotQuarantined, id)
		}
		return json.Unmarshal(raw, &e)
	})
	return e, err
}

// remove deletes an entry (after a successful replay, or by the operator).
func (q *quarantine) remove(id uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	removed := false
	err := q.db.Update(func(tx *bolt.Tx) error {
		entries := tx.Bucket(bucketEntries)
		raw := entries.Get(boltkv.U64(id))
		if raw == nil {
			return fmt.Errorf("%w: %d", ErrNotQuarantined, id)
		}
		var e QuarantineEntry
		if json.Unmarshal(raw, &e) == nil {
			h := hashMessage(e.Topic, e.Payload)
			if k := tx.Bucket(bucketByHash).Get(h[:]); k != nil && boltkv.ToU64(k) == id {
				_ = tx.Bucket(bucketByHash).Delete(h[:])
			}
		}
		removed = true
		return entries.Delete(boltkv.U64(id))
	})
	if removed && err == nil {
		q.entries--
	}
	return err
}

// update records a new reason after a replay that failed again.
func (q *quarantine) update(id uint64, reason, location string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.db.Update(func(tx *bolt.Tx) error {
		entries := tx.Bucket(bucketEntries)
		raw := entries.Get(boltkv.U64(id))
		if raw == nil {
			return fmt.Errorf("%w: %d", ErrNotQuarantined, id)
		}
		var e QuarantineEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return err
		}
		e.Reason, e.Location = reason, location
		return putJSON(entries, boltkv.U64(id), e)
	})
}

func (q *quarantine) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.entries
}

func (q *quarantine) close() error { return q.db.Close() }

func parseQuarantineID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: %q is not a quarantine id (a positive number from the list)", ErrNotQuarantined, s)
	}
	return id, nil
}
