package outbox

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	segjson "github.com/segmentio/encoding/json"
	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/pipedb"
	"github.com/plantsync/plantsync/internal/boltkv"
)

var (
	bucketOutbox  = []byte("outbox")
	bucketEntries = []byte("entries")
	keyNext       = []byte("next")
	keyPending    = []byte("pending")
)

// Bolt is the outbox in the pipeline's bbolt file. Appends happen inside
// the pipeline's transactions (AppendTx); reads and Complete open their own.
type Bolt struct {
	db    *pipedb.DB
	dests []string

	// OnFailed runs inside Complete's transaction for each failed entry;
	// the pipeline sets it to park the entry as an exception.
	OnFailed func(tx *bolt.Tx, e *Entry) error

	// depth counts each destination's pending entries (fixed after open).
	depth map[string]*pipedb.Counter

	mu      sync.Mutex
	notify  map[string]chan struct{}
	changed map[string]bool // dests with appends in the open transaction
}

// OpenBolt prepares the outbox buckets of dests in db.
func OpenBolt(db *pipedb.DB, dests []string) (*Bolt, error) {
	b := &Bolt{db: db, dests: append([]string(nil), dests...), depth: map[string]*pipedb.Counter{}, notify: map[string]chan struct{}{},
		changed: map[string]bool{}}
	sort.Strings(b.dests)
	err := db.Update(func(tx *bolt.Tx) error {
		ob, err := tx.CreateBucketIfNotExists(bucketOutbox)
		if err != nil {
			return err
		}
		for _, d := range b.dests {
			db, err := ob.CreateBucketIfNotExists([]byte(d))
			if err != nil {
				return err
			}
			if _, err := db.CreateBucketIfNotExists(bucketEntries); err != nil {
				return err
			}
			b.depth[d] = pipedb.NewCounter(keyPending)
			b.depth[d].Load(db)
			b.notify[d] = make(chan struct{})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open outbox: %w", err)
	}
	db.Register(b)
	return b, nil
}

var _ Store = (*Bolt)(nil)

// Destinations implements Store.
func (b *Bolt) Destinations() []string { return append([]string(nil), b.dests...) }

func (b *Bolt) destBucket(tx *bolt.Tx, dest string) (*bolt.Bucket, error) {
	db := tx.Bucket(bucketOutbox).Bucket([]byte(dest))
	if db == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownDestination, dest)
	}
	return db, nil
}

// Decode reads an entry value as Encode made it (the state byte, then the
// JSON), for code that holds such values outside the outbox (approval
// holds and queues). Seq is not part of the value.
func Decode(v []byte) (Entry, error) {
	var e Entry
	if len(v) < 2 {
		return e, errors.New("short value")
	}
	// segmentio's decoder reads what encoding/json reads (FuzzDecodeEntry
	// holds them to it) in about a fifth of the time: 1.3 µs against 6.1
	// µs for a workflow's entry (BenchmarkDecodeEntry). encoding/json words
	// the rare refusal.
	// Unmarshal copies strings and raw messages (never ZeroCopy): v lives
	// in bbolt's mmap only while its transaction is open.
	if segjson.Unmarshal(v[1:], &e) != nil {
		e = Entry{}
		if err := json.Unmarshal(v[1:], &e); err != nil {
			return e, err
		}
	}
	e.State = stateOf(v[0])
	return e, nil
}

// decode reads the stored entry under key k.
func decode(k, v []byte) (Entry, error) {
	e, err := Decode(v)
	if err != nil {
		return e, fmt.Errorf("outbox entry %d: %w", binary.BigEndian.Uint64(k), err)
	}
	e.Seq = binary.BigEndian.Uint64(k)
	return e, nil
}

// AppendTx appends a pending entry whose value Encode made, returning its
// Seq. Run it inside pipedb.DB.Update, whose hooks make depth and
// notifications follow the committed data. For many entries in one
// transaction use an Appender.
func (b *Bolt) AppendTx(tx *bolt.Tx, dest string, value []byte) (uint64, error) {
	a := b.NewAppender(tx)
	seq, err := a.Append(dest, value)
	if err != nil {
		return 0, err
	}
	return seq, a.Flush()
}

// appendFill is the page fill for append-only buckets.
const appendFill = 0.95

// Appender appends many entries in one transaction, writing each
// destination's counters once at Flush instead of once per entry.
type Appender struct {
	b    *Bolt
	tx   *bolt.Tx
	dest map[string]*appendState
}

type appendState struct {
	bucket, entries *bolt.Bucket
	next            uint64
	added           int
}

// NewAppender starts appending in tx; call Flush before the transaction
// ends.
func (b *Bolt) NewAppender(tx *bolt.Tx) *Appender {
	return &Appender{b: b, tx: tx, dest: map[string]*appendState{}}
}

// Append adds a pending entry (value as Encode made it) and returns its Seq.
func (a *Appender) Append(dest string, value []byte) (uint64, error) {
	st, ok := a.dest[dest]
	if !ok {
		db, err := a.b.destBucket(a.tx, dest)
		if err != nil {
			return 0, err
		}
		st = &appendState{bucket: db, entries: db.Bucket(bucketEntries), next: boltkv.GetU64(db, keyNext)}
		// Entries are only ever appended at the end: full pages on split
		// (instead of bbolt's half-full default) halve the pages written.
		st.entries.FillPercent = appendFill
		a.dest[dest] = st
	}
	st.next++
	st.added++
	return st.next, st.entries.Put(boltkv.U64(st.next), value)
}

// Flush writes the counters of every destination appended to.
func (a *Appender) Flush() error {
	for d, st := range a.dest {
		if st.added == 0 {
			continue
		}
		if err := boltkv.PutU64(st.bucket, keyNext, st.next); err != nil {
			return err
		}
		if err := a.b.addPendingTx(st.bucket, d, st.added); err != nil {
			return err
		}
		st.added = 0
	}
	return nil
}

func (b *Bolt) addPendingTx(db *bolt.Bucket, dest string, n int) error {
	if n > 0 {
		b.mu.Lock()
		b.changed[dest] = true
		b.mu.Unlock()
	}
	return b.depth[dest].Add(db, n)
}

// Committed implements pipedb.Hooks: it applies the depth changes of the
// committed transaction and wakes readers of destinations that gained
// entries.
func (b *Bolt) Committed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.depth {
		c.Committed()
	}
	for d := range b.changed {
		close(b.notify[d])
		b.notify[d] = make(chan struct{})
	}
	clear(b.changed)
}

// Discard implements pipedb.Hooks.
func (b *Bolt) Discard() {
	for _, c := range b.depth {
		c.Discard()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.changed)
}

// Pending implements Store.
func (b *Bolt) Pending(dest string, after uint64, limit int) ([]Entry, error) {
	var out []Entry
	err := b.scanPending(dest, after, limit, func(k, v []byte) error {
		e, err := decode(k, v)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// Snapshot is a pending entry as PendingSnapshots read it, together with
// the stored value it was decoded from.
type Snapshot struct {
	Entry
	value []byte
}

// PendingSnapshots is Pending for a deliverer that completes the entries
// with CompleteSnapshotsTx: that rewrites an entry whose stored value is
// still the one read here without decoding it a second time.
func (b *Bolt) PendingSnapshots(dest string, after uint64, limit int) ([]Snapshot, error) {
	var out []Snapshot
	err := b.scanPending(dest, after, limit, func(k, v []byte) error {
		e, err := decode(k, v)
		if err != nil {
			return err
		}
		// v lives in the read transaction's mmap: keep a copy.
		out = append(out, Snapshot{Entry: e, value: bytes.Clone(v)})
		return nil
	})
	return out, err
}

// scanPending calls fn with the key and value of up to limit pending
// entries of dest with Seq > after, in Seq order.
func (b *Bolt) scanPending(dest string, after uint64, limit int, fn func(k, v []byte) error) error {
	return b.db.View(func(tx *bolt.Tx) error {
		db, err := b.destBucket(tx, dest)
		if err != nil {
			return err
		}
		c := db.Bucket(bucketEntries).Cursor()
		n := 0
		for k, v := c.Seek(boltkv.U64(after + 1)); k != nil && n < limit; k, v = c.Next() {
			if len(v) == 0 || stateOf(v[0]) != StatePending {
				continue
			}
			if err := fn(k, v); err != nil {
				return err
			}
			n++
		}
		return nil
	})
}

// Get implements Store.
func (b *Bolt) Get(dest string, seq uint64) (Entry, error) {
	var e Entry
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		e, err = b.GetTx(tx, dest, seq)
		return err
	})
	return e, err
}

// GetTx reads one entry inside a transaction.
func (b *Bolt) GetTx(tx *bolt.Tx, dest string, seq uint64) (Entry, error) {
	db, err := b.destBucket(tx, dest)
	if err != nil {
		return Entry{}, err
	}
	v := db.Bucket(bucketEntries).Get(boltkv.U64(seq))
	if v == nil {
		return Entry{}, fmt.Errorf("%w: %s/%d", ErrNotFound, dest, seq)
	}
	return decode(boltkv.U64(seq), v)
}

// PutTx rewrites an entry (its State, outcome fields) inside a transaction,
// keeping the pending count right.
func (b *Bolt) PutTx(tx *bolt.Tx, e *Entry) error {
	db, err := b.destBucket(tx, e.Destination)
	if err != nil {
		return err
	}
	eb := db.Bucket(bucketEntries)
	old := eb.Get(boltkv.U64(e.Seq))
	if old == nil {
		return fmt.Errorf("%w: %s/%d", ErrNotFound, e.Destination, e.Seq)
	}
	wasPending := stateOf(old[0]) == StatePending
	seq := e.Seq
	v, err := Encode(e)
	e.Seq = seq
	if err != nil {
		return err
	}
	if err := eb.Put(boltkv.U64(seq), v); err != nil {
		return err
	}
	switch isPending := e.State == StatePending; {
	case wasPending && !isPending:
		return b.addPendingTx(db, e.Destination, -1)
	case !wasPending && isPending:
		return b.addPendingTx(db, e.Destination, 1)
	}
	return nil
}

// Complete implements Store.
func (b *Bolt) Complete(dest string, outcomes []Outcome) error {
	return b.db.Update(func(tx *bolt.Tx) error { return b.CompleteTx(tx, dest, outcomes, nil) })
}

// CompleteTx records outcomes inside a transaction; each runs after, when
// given, with the updated entry (the built-in alerts destination stores its
// alerts there).
func (b *Bolt) CompleteTx(tx *bolt.Tx, dest string, outcomes []Outcome, each func(*Entry) error) error {
	return b.completeTx(tx, dest, outcomes, nil, each)
}

// CompleteSnapshotsTx is CompleteTx for entries read with PendingSnapshots:
// an entry whose stored value is still the snapshot's is rewritten from the
// snapshot instead of being decoded again; any other (changed since, or
// without a snapshot of the same Seq) is read from storage as CompleteTx
// reads it. outcomes[i] should be the outcome of snaps[i].
func (b *Bolt) CompleteSnapshotsTx(tx *bolt.Tx, dest string, snaps []Snapshot, outcomes []Outcome, each func(*Entry) error) error {
	return b.completeTx(tx, dest, outcomes, snaps, each)
}

func (b *Bolt) completeTx(tx *bolt.Tx, dest string, outcomes []Outcome, snaps []Snapshot, each func(*Entry) error) error {
	db, err := b.destBucket(tx, dest)
	if err != nil {
		return err
	}
	eb := db.Bucket(bucketEntries)
	completed := 0
	for i, o := range outcomes {
		k := boltkv.U64(o.Seq)
		v := eb.Get(k)
		if v == nil {
			return fmt.Errorf("%w: %s/%d", ErrNotFound, dest, o.Seq)
		}
		var e Entry
		if i < len(snaps) && snaps[i].Seq == o.Seq && bytes.Equal(snaps[i].value, v) {
			// Unchanged since it was read: the snapshot is what decode
			// would return.
			e = snaps[i].Entry
		} else if e, err = decode(k, v); err != nil {
			return err
		}
		if e.State != StatePending {
			continue // completed before (a delivery retried after a crash)
		}
		if o.State != StateDelivered && o.State != StateFailed {
			return fmt.Errorf("outbox %s/%d: outcome state %q; want delivered or failed", dest, o.Seq, o.State)
		}
		at := o.At
		if at.IsZero() {
			at = time.Now()
		}
		at = at.UTC()
		e.State, e.ExternalRef, e.Message, e.CompletedAt = o.State, o.ExternalRef, o.Message, &at
		if o.Attempts > 0 {
			e.Attempts = o.Attempts
		}
		if each != nil {
			if err := each(&e); err != nil {
				return err
			}
		}
		nv, err := Encode(&e)
		if err != nil {
			return err
		}
		if err := eb.Put(k, nv); err != nil {
			return err
		}
		if e.State != StatePending {
			completed++
		}
		if e.State == StateFailed && b.OnFailed != nil {
			if err := b.OnFailed(tx, &e); err != nil {
				return err
			}
		}
	}
	if completed == 0 {
		return nil
	}
	// One counter update for the whole batch instead of one per entry.
	return b.addPendingTx(db, dest, -completed)
}

// Depth implements Store.
func (b *Bolt) Depth(dest string) int {
	if c, ok := b.depth[dest]; ok {
		return c.Value()
	}
	return 0
}

// Changed implements Store.
func (b *Bolt) Changed(dest string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch, ok := b.notify[dest]
	if !ok {
		// An unknown destination never changes.
		return make(chan struct{})
	}
	return ch
}

// List implements Store.
func (b *Bolt) List(q Query) ([]Entry, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	var out []Entry
	err := b.db.View(func(tx *bolt.Tx) error {
		db, err := b.destBucket(tx, q.Destination)
		if err != nil {
			return err
		}
		c := db.Bucket(bucketEntries).Cursor()
		var k, v []byte
		next := c.Next
		switch {
		case q.Ascending:
			k, v = c.Seek(boltkv.U64(q.After + 1))
		case q.Before > 0:
			c.Seek(boltkv.U64(q.Before))
			k, v = c.Prev()
			next = c.Prev
		default:
			k, v = c.Last()
			next = c.Prev
		}
		for ; k != nil && len(out) < q.Limit; k, v = next() {
			if q.State != "" && (len(v) == 0 || stateOf(v[0]) != q.State) {
				continue
			}
			e, err := decode(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}
