package approvals

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	segjson "github.com/segmentio/encoding/json"
	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/hub/pipedb"
	"github.com/plantsync/plantsync/internal/boltkv"
)

// ErrNotFound is returned for an approval that does not exist.
var ErrNotFound = errors.New("approval not found")

// ErrDecided is returned when deciding an approval twice.
var ErrDecided = errors.New("approval already decided")

// State of an approval.
type State string

// States.
const (
	StatePending  State = "pending"
	StateApproved State = "approved"
	StateRejected State = "rejected"
)

// Approval is one held action.
type Approval struct {
	ID          uint64       `json:"id"`
	State       State        `json:"state"`
	Destination string       `json:"destination"`
	Action      string       `json:"action"`
	OrderingKey string       `json:"ordering_key"`
	Rule        string       `json:"rule"`
	Reason      string       `json:"reason"`
	Entry       outbox.Entry `json:"entry"`
	CreatedAt   time.Time    `json:"created_at"`
	DecidedAt   *time.Time   `json:"decided_at,omitempty"`
	DecidedBy   string       `json:"decided_by,omitempty"`
	Comment     string       `json:"comment,omitempty"`
	// Released is set once the decision took effect: the action left for
	// the outbox (OutboxSeq) or, rejected, was dropped. An approved action
	// behind another pending one waits until that one is decided.
	Released  bool   `json:"released"`
	OutboxSeq uint64 `json:"outbox_seq,omitempty"`
}

// Waiting is one action queued behind a held one.
type Waiting struct {
	Kind           string    `json:"kind"` // "held" (another approval) or "action"
	Approval       uint64    `json:"approval,omitempty"`
	Action         string    `json:"action"`
	IdempotencyKey string    `json:"idempotency_key"`
	EventID        string    `json:"event_id"`
	CreatedAt      time.Time `json:"created_at"`
}

var (
	bucketApprovals = []byte("approvals")
	bucketQueue     = []byte("approval_queue")
	bucketMeta      = []byte("approvals_meta")
	keyNext         = []byte("next")
	keyNextItem     = []byte("next_item")
	keyPending      = []byte("pending")
)

// Bolt stores approvals and their queues in the pipeline's file.
type Bolt struct {
	db *pipedb.DB

	pending *pipedb.Counter // approvals waiting for a decision
}

// OpenBolt prepares the buckets.
func OpenBolt(db *pipedb.DB) (*Bolt, error) {
	b := &Bolt{db: db, pending: pipedb.NewCounter(keyPending)}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, n := range [][]byte{bucketApprovals, bucketQueue} {
			if _, err := tx.CreateBucketIfNotExists(n); err != nil {
				return err
			}
		}
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		b.pending.Load(m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open approvals: %w", err)
	}
	db.Register(b)
	return b, nil
}

// Committed implements pipedb.Hooks.
func (b *Bolt) Committed() { b.pending.Committed() }

// Discard implements pipedb.Hooks.
func (b *Bolt) Discard() { b.pending.Discard() }

// PendingCount is the number of approvals waiting for a decision.
func (b *Bolt) PendingCount() int { return b.pending.Value() }

func (b *Bolt) count(tx *bolt.Tx, delta int) error {
	return b.pending.Add(tx.Bucket(bucketMeta), delta)
}

func queuePrefix(dest, okey string) []byte {
	return []byte(dest + "\x00" + okey + "\x00")
}

// BlockedTx reports whether actions for (dest, okey) must queue behind a
// held one.
func (b *Bolt) BlockedTx(tx *bolt.Tx, dest, okey string) bool {
	c := tx.Bucket(bucketQueue).Cursor()
	if k, _ := c.First(); k == nil {
		return false // the usual case: nothing held anywhere
	}
	p := queuePrefix(dest, okey)
	k, _ := c.Seek(p)
	return k != nil && bytes.HasPrefix(k, p)
}

func (b *Bolt) enqueue(tx *bolt.Tx, dest, okey string, item []byte) error {
	n, err := boltkv.NextU64(tx.Bucket(bucketMeta), keyNextItem)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketQueue).Put(append(queuePrefix(dest, okey), boltkv.U64(n)...), item)
}

// HoldTx holds an action for review and queues it. It sets the entry's
// Lineage.Approval.
func (b *Bolt) HoldTx(tx *bolt.Tx, e outbox.Entry, rule, reason string, now time.Time) (*Approval, error) {
	id, err := boltkv.NextU64(tx.Bucket(bucketMeta), keyNext)
	if err != nil {
		return nil, err
	}
	e.Lineage.Approval = id
	a := &Approval{ID: id, State: StatePending, Destination: e.Destination, Action: e.Action, OrderingKey: e.OrderingKey,
		Rule: rule, Reason: reason, Entry: e, CreatedAt: now.UTC()}
	if err := b.put(tx, a); err != nil {
		return nil, err
	}
	if err := b.enqueue(tx, e.Destination, e.OrderingKey, append([]byte{'a'}, boltkv.U64(id)...)); err != nil {
		return nil, err
	}
	return a, b.count(tx, 1)
}

// EnqueueTx queues an action (value as outbox.Encode made it) behind the
// held ones of its ordering key.
func (b *Bolt) EnqueueTx(tx *bolt.Tx, dest, okey string, value []byte) error {
	return b.enqueue(tx, dest, okey, append([]byte{'e'}, value...))
}

func (b *Bolt) put(tx *bolt.Tx, a *Approval) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketApprovals).Put(boltkv.U64(a.ID), v)
}

// GetTx reads one approval inside a transaction.
func (b *Bolt) GetTx(tx *bolt.Tx, id uint64) (*Approval, error) {
	v := tx.Bucket(bucketApprovals).Get(boltkv.U64(id))
	if v == nil {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	var a Approval
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, fmt.Errorf("approval %d: %w", id, err)
	}
	return &a, nil
}

// DecideTx records a decision. The caller then calls ReleaseTx for the
// approval's queue.
func (b *Bolt) DecideTx(tx *bolt.Tx, id uint64, approve bool, subject, comment string, now time.Time) (*Approval, error) {
	a, err := b.GetTx(tx, id)
	if err != nil {
		return nil, err
	}
	if a.State != StatePending {
		return a, fmt.Errorf("%w: approval %d was %s by %s", ErrDecided, id, a.State, a.DecidedBy)
	}
	at := now.UTC()
	a.State, a.DecidedAt, a.DecidedBy, a.Comment = StateRejected, &at, subject, comment
	if approve {
		a.State = StateApproved
	}
	if err := b.put(tx, a); err != nil {
		return nil, err
	}
	return a, b.count(tx, -1)
}

// ReleaseTx moves what may leave the queue of (dest, okey) to the outbox,
// in order: queued actions, approved held ones, and drops rejected ones,
// stopping at the first held action still pending. emit appends an encoded
// entry to the outbox and returns its Seq.
func (b *Bolt) ReleaseTx(tx *bolt.Tx, dest, okey string, emit func(value []byte) (uint64, error)) (released int, err error) {
	p := queuePrefix(dest, okey)
	q := tx.Bucket(bucketQueue)
	for {
		c := q.Cursor()
		k, v := c.Seek(p)
		if k == nil || !bytes.HasPrefix(k, p) || len(v) == 0 {
			return released, nil
		}
		switch v[0] {
		case 'a':
			a, err := b.GetTx(tx, binary.BigEndian.Uint64(v[1:]))
			if err != nil {
				return released, err
			}
			switch a.State {
			case StatePending:
				return released, nil
			case StateApproved:
				e := a.Entry
				e.State = outbox.StatePending
				val, err := outbox.Encode(&e)
				if err != nil {
					return released, err
				}
				if a.OutboxSeq, err = emit(val); err != nil {
					return released, err
				}
				released++
			}
			a.Released = true
			if err := b.put(tx, a); err != nil {
				return released, err
			}
		case 'e':
			if _, err := emit(append([]byte(nil), v[1:]...)); err != nil {
				return released, err
			}
			released++
		default:
			return released, fmt.Errorf("approval queue %q: unknown item kind %q", k, v[0])
		}
		if err := q.Delete(k); err != nil {
			return released, err
		}
	}
}

// Get reads one approval with what waits behind it.
func (b *Bolt) Get(id uint64) (*Approval, []Waiting, error) {
	var a *Approval
	var w []Waiting
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		if a, err = b.GetTx(tx, id); err != nil {
			return err
		}
		w, err = b.waitingTx(tx, a)
		return err
	})
	return a, w, err
}

// waitingTx lists the queue items behind approval a.
func (b *Bolt) waitingTx(tx *bolt.Tx, a *Approval) ([]Waiting, error) {
	if a.Released {
		return nil, nil
	}
	p := queuePrefix(a.Destination, a.OrderingKey)
	c := tx.Bucket(bucketQueue).Cursor()
	var out []Waiting
	behind := false
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if len(v) == 0 {
			continue
		}
		switch v[0] {
		case 'a':
			id := binary.BigEndian.Uint64(v[1:])
			if id == a.ID {
				behind = true
				continue
			}
			if behind {
				o, err := b.GetTx(tx, id)
				if err != nil {
					return nil, err
				}
				out = append(out, Waiting{Kind: "held", Approval: id, Action: o.Action, IdempotencyKey: o.Entry.IdempotencyKey, EventID: o.Entry.Lineage.EventID, CreatedAt: o.CreatedAt})
			}
		case 'e':
			if !behind {
				continue
			}
			e, err := outbox.Decode(v[1:])
			if err != nil {
				return nil, fmt.Errorf("approval queue %q: %w", k, err)
			}
			out = append(out, Waiting{Kind: "action", Action: e.Action, IdempotencyKey: e.IdempotencyKey, EventID: e.Lineage.EventID, CreatedAt: e.CreatedAt})
		}
	}
	return out, nil
}

// Listed is an approval with what waits behind it.
type Listed struct {
	*Approval
	Waiting []Waiting `json:"waiting"`
}

// List returns approvals in a state ("" or "all" for any), newest first.
func (b *Bolt) List(state string, limit int) ([]Listed, error) {
	if limit <= 0 {
		limit = 100
	}
	var out []Listed
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketApprovals).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var a Approval
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("approval %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if state != "" && state != "all" && string(a.State) != state {
				continue
			}
			w, err := b.waitingTx(tx, &a)
			if err != nil {
				return err
			}
			if w == nil {
				w = []Waiting{}
			}
			out = append(out, Listed{Approval: &a, Waiting: w})
		}
		return nil
	})
	return out, err
}

// Prune deletes approvals decided before cutoff whose decision took effect
// (Released), looking at up to limit of them after id after, oldest first
// (pipedb.PruneChunk). Pending ones, and decided ones still waiting behind
// another held action, stay whatever their age. Ids follow creation, so the
// scan ends at the first approval created at or after cutoff.
func (b *Bolt) Prune(cutoff time.Time, after uint64, limit int) (pipedb.Chunk, error) {
	return b.db.PruneChunk(pipedb.Pruner{
		What:   "approval ",
		Bucket: func(tx *bolt.Tx) (*bolt.Bucket, error) { return tx.Bucket(bucketApprovals), nil },
		Judge: func(_ *bolt.Tx, _, v []byte) (pipedb.Verdict, error) {
			var a struct {
				State     State      `json:"state"`
				CreatedAt time.Time  `json:"created_at"`
				DecidedAt *time.Time `json:"decided_at"`
				Released  bool       `json:"released"`
			}
			if err := segjson.Unmarshal(v, &a); err != nil {
				return pipedb.Keep, err
			}
			if a.State == StatePending || !a.Released {
				a.DecidedAt = nil
			}
			return pipedb.ByAge(cutoff, a.CreatedAt, a.DecidedAt), nil
		},
	}, after, limit)
}

// ExistsTx reports whether approval id is still stored (not pruned).
func (b *Bolt) ExistsTx(tx *bolt.Tx, id uint64) bool {
	return tx.Bucket(bucketApprovals).Get(boltkv.U64(id)) != nil
}
