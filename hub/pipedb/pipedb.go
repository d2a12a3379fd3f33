// Package pipedb is the pipeline's bbolt file (pipeline.db), shared by the
// journal cursor, outbox, exceptions, approvals and alerts so that one
// transaction can move the cursor and write everything an event yields.
// Writers are serialised here, and packages that keep in-memory counters
// (outbox depth, pending approvals) register hooks that apply their
// changes only once a transaction has committed.
package pipedb

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// FormatVersion of the file. 2 added the open-exceptions index
// (hub/exceptions builds it when it opens a format 1 file).
const FormatVersion = 2

// ErrCorrupt marks a file that failed its checks on open.
var ErrCorrupt = errors.New("pipeline store is corrupt")

var (
	bucketMeta = []byte("meta")
	keyFormat  = []byte("format")
)

// Hooks follow the outcome of every write transaction.
type Hooks interface {
	// Committed runs after a transaction committed.
	Committed()
	// Discard runs after a transaction failed or was rolled back.
	Discard()
}

// DB is the pipeline's file. Read with View; write only with Update.
type DB struct {
	*bolt.DB
	mu    sync.Mutex
	hooks []Hooks
}

// Open opens or creates the file.
func Open(path string) (*DB, error) {
	// NoFreelistSync: the freelist is rebuilt by scanning on open instead
	// of being written with every commit, which halves the pages a small
	// commit writes (etcd runs bbolt the same way).
	db, err := boltkv.Open(path, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType, NoFreelistSync: true},
		boltkv.OpenSpec{What: "pipeline file", Corrupt: ErrCorrupt, Owner: "is another hub running with the same storage.dir?",
			Aside: "to start over (the pipeline then processes the events the journal keeps again, with the same idempotency keys; decisions on exceptions, approvals and alerts are lost)"})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		v := meta.Get(keyFormat)
		if v == nil {
			return meta.Put(keyFormat, []byte(strconv.Itoa(FormatVersion)))
		}
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 {
			return fmt.Errorf("%w: %s: format version %q unreadable", ErrCorrupt, path, v)
		}
		if n > FormatVersion {
			return fmt.Errorf("%s has format %d, this hub reads up to %d; upgrade the hub", path, n, FormatVersion)
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &DB{DB: db}, nil
}

// Register adds hooks; call it before the first Update.
func (d *DB) Register(h Hooks) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hooks = append(d.hooks, h)
}

// Update runs fn in a write transaction, one writer at a time, then runs
// every hook's Committed or Discard.
func (d *DB) Update(fn func(tx *bolt.Tx) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.DB.Update(fn)
	for _, h := range d.hooks {
		if err != nil {
			h.Discard()
		} else {
			h.Committed()
		}
	}
	return err
}

// Meta is the bucket for small values of the pipeline itself (the cursor).
func Meta(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket(bucketMeta) }

// Format is the file's format version.
func Format(tx *bolt.Tx) int {
	n, _ := strconv.Atoi(string(Meta(tx).Get(keyFormat)))
	return n
}

// UpgradeFormat records that the file now has format n. A package that
// migrates the file calls it in the migrating transaction, so that a hub
// too old to keep the migrated data right refuses the file.
func UpgradeFormat(tx *bolt.Tx, n int) error {
	if Format(tx) >= n {
		return nil
	}
	return Meta(tx).Put(keyFormat, []byte(strconv.Itoa(n)))
}
