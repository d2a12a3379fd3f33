package pipedb

import (
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// Counter is a count kept under one key of a store's meta bucket and
// mirrored in memory for metrics and health: a change made inside a
// transaction reaches the mirror only once that transaction commits
// (Committed) and is dropped when it does not (Discard), so the mirror
// never shows what the file does not hold. The stores call these from their
// Hooks.
type Counter struct {
	key []byte

	mu    sync.Mutex
	n     int
	delta int
}

// NewCounter keeps its count under key.
func NewCounter(key []byte) *Counter { return &Counter{key: []byte(key)} }

// Load reads the persisted count (at open).
func (c *Counter) Load(meta *bolt.Bucket) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = int(boltkv.GetU64(meta, c.key))
}

// Add changes the persisted count inside tx and remembers the change for
// Committed. The count never goes below zero.
func (c *Counter) Add(meta *bolt.Bucket, delta int) error {
	v := max(int64(boltkv.GetU64(meta, c.key))+int64(delta), 0)
	c.mu.Lock()
	c.delta += delta
	c.mu.Unlock()
	return boltkv.PutU64(meta, c.key, uint64(v))
}

// Committed applies the changes of the committed transaction.
func (c *Counter) Committed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n = max(c.n+c.delta, 0)
	c.delta = 0
}

// Discard forgets the changes of a transaction that did not commit.
func (c *Counter) Discard() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delta = 0
}

// Value is the committed count.
func (c *Counter) Value() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
