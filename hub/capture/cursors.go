package capture

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// ErrCursors marks a cursor file that is not a whole bbolt file.
var ErrCursors = errors.New("capture cursor file is corrupt")

var cursorBucket = []byte("cursors")

// Cursors stores each destination's change cursor durably (one bbolt file,
// fsync'd on every Put): the cursor moves only after the events it covers
// sit in the journal.
type Cursors struct {
	db *bolt.DB
}

// OpenCursors opens (creating) the cursor store at path.
func OpenCursors(path string) (*Cursors, error) {
	db, err := boltkv.Open(path, &bolt.Options{Timeout: 2 * time.Second},
		boltkv.OpenSpec{What: "capture cursors", Corrupt: ErrCursors, Owner: "is another hub running with the same storage.dir?",
			Aside: "to read the ERP's changes again from the start (the hub drops the ones it has)"})
	if err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(cursorBucket)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("capture cursors %s: %w", path, err)
	}
	return &Cursors{db: db}, nil
}

// Get returns the destination's cursor ("" before the first stored one).
func (c *Cursors) Get(destination string) (string, error) {
	var out string
	err := c.db.View(func(tx *bolt.Tx) error {
		out = string(tx.Bucket(cursorBucket).Get([]byte(destination)))
		return nil
	})
	return out, err
}

// Put stores the destination's cursor.
func (c *Cursors) Put(destination, cursor string) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(cursorBucket).Put([]byte(destination), []byte(cursor))
	})
}

// Close closes the store; safe on nil.
func (c *Cursors) Close() error {
	if c == nil || c.db == nil {
		return nil
	}
	err := c.db.Close()
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return nil
	}
	return err
}
