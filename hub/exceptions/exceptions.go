package exceptions

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	segjson "github.com/segmentio/encoding/json"
	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/hub/pipedb"
	"github.com/plantsync/plantsync/internal/boltkv"
)

// ErrNotFound is returned for an exception that does not exist.
var ErrNotFound = errors.New("exception not found")

// State of an exception.
type State string

// States.
const (
	StateOpen     State = "open"
	StateResolved State = "resolved"
)

// Kinds of exception. They are bounded (metric labels); the reason text
// carries the detail.
const (
	KindUndecodable    = "undecodable"
	KindUnknownType    = "unknown_type"
	KindSchemaVersion  = "schema_version"
	KindValidation     = "validation"
	KindRule           = "rule"
	KindRuleError      = "rule_error"
	KindConversion     = "conversion"
	KindBufferOverflow = "buffer_overflow"
	KindSourceError    = "source_error"
	KindJournalGap     = "journal_gap"
	KindDelivery       = "delivery"
	// Unmapped kinds are "unmapped_" + the crosswalk kind, e.g.
	// unmapped_item, unmapped_unit, unmapped_supplier.
	KindUnmappedPrefix = "unmapped_"
)

// Operational reports whose replay only acknowledges them.
func Operational(kind string) bool {
	return kind == KindBufferOverflow || kind == KindSourceError || kind == KindJournalGap
}

// Delivery identifies the outbox entry of a delivery exception.
type Delivery struct {
	Destination    string `json:"destination"`
	Seq            uint64 `json:"seq"`
	Action         string `json:"action"`
	IdempotencyKey string `json:"idempotency_key"`
}

// Exception is one parked event (or failed delivery).
type Exception struct {
	ID        uint64    `json:"id"`
	State     State     `json:"state"`
	Kind      string    `json:"kind"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`

	Plant         string `json:"plant,omitempty"`
	EventType     string `json:"event_type,omitempty"`
	EventID       string `json:"event_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	Position      uint64 `json:"journal_position,omitempty"`
	Producer      string `json:"producer,omitempty"`
	// Event is the encoded plantsync.v1.Event as journaled, so a replay
	// works even after journal retention pruned it.
	Event []byte `json:"event,omitempty"`

	// FailedActions are the workflow steps that could not be built
	// ("event/action@destination").
	FailedActions []string `json:"failed_actions,omitempty"`
	// Emitted are the idempotency keys of the event's actions that already
	// reached the outbox or an approval hold; a replay skips them.
	Emitted  []string       `json:"emitted,omitempty"`
	Lineage  outbox.Lineage `json:"lineage"`
	Delivery *Delivery      `json:"delivery,omitempty"`

	Replays    int        `json:"replays,omitempty"`
	ResolvedAt *time.Time `json:"resolved_at,omitempty"`
	ResolvedBy string     `json:"resolved_by,omitempty"`
	Resolution string     `json:"resolution,omitempty"`
}

// HasEmitted reports whether an idempotency key already left.
func (e *Exception) HasEmitted(key string) bool {
	for _, k := range e.Emitted {
		if k == key {
			return true
		}
	}
	return false
}

// Filter selects exceptions.
type Filter struct {
	Plant  string `json:"plant,omitempty"`
	Type   string `json:"type,omitempty"`
	Kind   string `json:"kind,omitempty"`
	Reason string `json:"reason,omitempty"` // substring, case-insensitive
	// State is open (default), resolved or all.
	State string `json:"state,omitempty"`
	// Before pages backwards: only ids below it.
	Before uint64 `json:"before,omitempty"`
	Limit  int    `json:"limit,omitempty"`
}

// Validate checks the filter's values.
func (f Filter) Validate() error {
	switch f.State {
	case "", string(StateOpen), string(StateResolved), "all":
	default:
		return fmt.Errorf("state %q; want open, resolved or all", f.State)
	}
	if f.Limit < 0 {
		return fmt.Errorf("limit %d; want a positive number", f.Limit)
	}
	return nil
}

// Match reports whether e passes the filter.
func (f Filter) Match(e *Exception) bool {
	switch f.State {
	case "", string(StateOpen):
		if e.State != StateOpen {
			return false
		}
	case string(StateResolved):
		if e.State != StateResolved {
			return false
		}
	}
	if f.Plant != "" && e.Plant != f.Plant {
		return false
	}
	if f.Type != "" && e.EventType != f.Type {
		return false
	}
	if f.Kind != "" && e.Kind != f.Kind {
		return false
	}
	if f.Reason != "" && !strings.Contains(strings.ToLower(e.Reason), strings.ToLower(f.Reason)) {
		return false
	}
	return true
}

var (
	bucketExceptions = []byte("exceptions")
	bucketMeta       = []byte("exceptions_meta")
	// bucketOpen indexes the open exceptions by id (empty values), so that
	// listing them does not read every resolved one.
	bucketOpen = []byte("exceptions_open")
	keyNext    = []byte("next")
	keyOpen    = []byte("open")
)

// Bolt stores exceptions in the pipeline's file.
type Bolt struct {
	db *pipedb.DB

	open *pipedb.Counter // open exceptions

	mu        sync.Mutex
	created   map[string]int // kinds created in the open transaction
	createdOK map[string]int // kinds created since the last TakeCreated
}

// OpenBolt prepares the buckets.
func OpenBolt(db *pipedb.DB) (*Bolt, error) {
	b := &Bolt{db: db, open: pipedb.NewCounter(keyOpen), created: map[string]int{}, createdOK: map[string]int{}}
	err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketExceptions); err != nil {
			return err
		}
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		b.open.Load(m)
		if tx.Bucket(bucketOpen) == nil {
			if err := buildOpenIndex(tx); err != nil {
				return err
			}
		}
		return pipedb.UpgradeFormat(tx, 2)
	})
	if err != nil {
		return nil, fmt.Errorf("open exceptions: %w", err)
	}
	db.Register(b)
	return b, nil
}

// buildOpenIndex indexes the open exceptions of a file written before the
// index existed (format 1).
func buildOpenIndex(tx *bolt.Tx) error {
	idx, err := tx.CreateBucket(bucketOpen)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketExceptions).ForEach(func(k, v []byte) error {
		var e struct {
			State State `json:"state"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("exception %d: %w", binary.BigEndian.Uint64(k), err)
		}
		if e.State != StateOpen {
			return nil
		}
		return idx.Put(bytes.Clone(k), nil)
	})
}

// index keeps e's entry in the open index in step with its state.
func index(tx *bolt.Tx, e *Exception) error {
	idx := tx.Bucket(bucketOpen)
	if e.State == StateOpen {
		return idx.Put(boltkv.U64(e.ID), nil)
	}
	return idx.Delete(boltkv.U64(e.ID))
}

// Committed implements pipedb.Hooks.
func (b *Bolt) Committed() {
	b.open.Committed()
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, n := range b.created {
		b.createdOK[k] += n
	}
	clear(b.created)
}

// Discard implements pipedb.Hooks.
func (b *Bolt) Discard() {
	b.open.Discard()
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.created)
}

// OpenCount is the number of open exceptions.
func (b *Bolt) OpenCount() int { return b.open.Value() }

// TakeCreated returns the exceptions created per kind since the last call
// (for the exceptions_total counter).
func (b *Bolt) TakeCreated() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.createdOK
	b.createdOK = map[string]int{}
	return out
}

func (b *Bolt) count(tx *bolt.Tx, delta int) error {
	return b.open.Add(tx.Bucket(bucketMeta), delta)
}

// AddTx stores a new exception, assigning its ID.
func (b *Bolt) AddTx(tx *bolt.Tx, e *Exception) error {
	id, err := boltkv.NextU64(tx.Bucket(bucketMeta), keyNext)
	if err != nil {
		return err
	}
	e.ID = id
	if e.State == "" {
		e.State = StateOpen
	}
	if e.UpdatedAt.IsZero() {
		e.UpdatedAt = e.CreatedAt
	}
	if err := b.put(tx, e); err != nil {
		return err
	}
	b.mu.Lock()
	b.created[e.Kind]++
	b.mu.Unlock()
	if e.State == StateOpen {
		return b.count(tx, 1)
	}
	return nil
}

func (b *Bolt) put(tx *bolt.Tx, e *Exception) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := index(tx, e); err != nil {
		return err
	}
	return tx.Bucket(bucketExceptions).Put(boltkv.U64(e.ID), v)
}

// GetTx reads one exception inside a transaction.
func (b *Bolt) GetTx(tx *bolt.Tx, id uint64) (*Exception, error) {
	v := tx.Bucket(bucketExceptions).Get(boltkv.U64(id))
	if v == nil {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	var e Exception
	if err := json.Unmarshal(v, &e); err != nil {
		return nil, fmt.Errorf("exception %d: %w", id, err)
	}
	return &e, nil
}

// PutTx rewrites an exception, keeping the open count right. Whether it
// was open is the open index's to say: the stored record is not decoded.
func (b *Bolt) PutTx(tx *bolt.Tx, e *Exception) error {
	key := boltkv.U64(e.ID)
	if tx.Bucket(bucketExceptions).Get(key) == nil {
		return fmt.Errorf("%w: %d", ErrNotFound, e.ID)
	}
	// Index values are empty (nil from Get), so look the key up.
	k, _ := tx.Bucket(bucketOpen).Cursor().Seek(key)
	wasOpen := bytes.Equal(k, key)
	if err := b.put(tx, e); err != nil {
		return err
	}
	switch {
	case wasOpen && e.State != StateOpen:
		return b.count(tx, -1)
	case !wasOpen && e.State == StateOpen:
		return b.count(tx, 1)
	}
	return nil
}

// Get reads one exception.
func (b *Bolt) Get(id uint64) (*Exception, error) {
	var e *Exception
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		e, err = b.GetTx(tx, id)
		return err
	})
	return e, err
}

// List returns matching exceptions, newest first. Open ones (the default)
// are read through the open index; resolved ones, and all, by scanning from
// the newest, so a filter that matches little over a large history reads
// much of it.
func (b *Bolt) List(f Filter) ([]*Exception, error) {
	if f.Limit == 0 {
		f.Limit = 100
	}
	var out []*Exception
	err := b.db.View(func(tx *bolt.Tx) error {
		all := tx.Bucket(bucketExceptions)
		c := all.Cursor()
		value := func(k, v []byte) []byte { return v }
		if f.State == "" || f.State == string(StateOpen) {
			c = tx.Bucket(bucketOpen).Cursor()
			value = func(k, _ []byte) []byte { return all.Get(k) }
		}
		var k, v []byte
		if f.Before > 0 {
			c.Seek(boltkv.U64(f.Before))
			k, v = c.Prev()
		} else {
			k, v = c.Last()
		}
		for ; k != nil && len(out) < f.Limit; k, v = c.Prev() {
			var e Exception
			raw := value(k, v)
			if raw == nil {
				return fmt.Errorf("exception %d is indexed as open but not stored: pipeline.db is damaged", binary.BigEndian.Uint64(k))
			}
			if err := json.Unmarshal(raw, &e); err != nil {
				return fmt.Errorf("exception %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if f.Match(&e) {
				out = append(out, &e)
			}
		}
		return nil
	})
	return out, err
}

// Prune deletes exceptions resolved before cutoff, looking at up to limit
// of them after id after, oldest first (pipedb.PruneChunk). Open ones stay
// whatever their age, and are passed over through the open index without
// being read. Ids follow creation, so the scan ends at the first resolved
// exception created at or after cutoff. For a pruned delivery exception,
// delivery runs in the deleting transaction (the pipeline deletes the
// failed outbox entry it parked).
func (b *Bolt) Prune(cutoff time.Time, after uint64, limit int, delivery func(tx *bolt.Tx, d *Delivery) error) (pipedb.Chunk, error) {
	type stored struct {
		State      State      `json:"state"`
		CreatedAt  time.Time  `json:"created_at"`
		ResolvedAt *time.Time `json:"resolved_at"`
		Delivery   *Delivery  `json:"delivery"`
	}
	return b.db.PruneChunk(pipedb.Pruner{
		What:   "exception ",
		Bucket: func(tx *bolt.Tx) (*bolt.Bucket, error) { return tx.Bucket(bucketExceptions), nil },
		Judge: func(tx *bolt.Tx, k, v []byte) (pipedb.Verdict, error) {
			if ok, _ := tx.Bucket(bucketOpen).Cursor().Seek(k); bytes.Equal(ok, k) {
				return pipedb.Keep, nil
			}
			var e stored
			if err := segjson.Unmarshal(v, &e); err != nil {
				return pipedb.Keep, err
			}
			if e.State != StateResolved {
				e.ResolvedAt = nil
			}
			return pipedb.ByAge(cutoff, e.CreatedAt, e.ResolvedAt), nil
		},
		Gone: func(tx *bolt.Tx, _, v []byte) error {
			var e stored
			if err := segjson.Unmarshal(v, &e); err != nil || e.Delivery == nil || delivery == nil {
				return err
			}
			return delivery(tx, e.Delivery)
		},
	}, after, limit)
}

// ExistsTx reports whether exception id is still stored (not pruned).
func (b *Bolt) ExistsTx(tx *bolt.Tx, id uint64) bool {
	return tx.Bucket(bucketExceptions).Get(boltkv.U64(id)) != nil
}
