package alerts

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	segjson "github.com/segmentio/encoding/json"
	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/pipedb"
	"github.com/plantsync/plantsync/internal/boltkv"
)

// Destination is the name of the built-in alerts destination.
const Destination = "alerts"

// Action is the one action the alerts destination performs.
const Action = "alert.raise"

// ErrNotFound is returned for an alert that does not exist.
var ErrNotFound = errors.New("alert not found")

// ErrAcknowledged is returned when acknowledging an alert twice.
var ErrAcknowledged = errors.New("alert already acknowledged")

// Severity of an alert.
type Severity string

// Severities.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Document is what an alert.raise action carries.
type Document struct {
	Severity      Severity          `json:"severity"`
	Title         string            `json:"title"`
	Message       string            `json:"message"`
	Plant         string            `json:"plant"`
	EventType     string            `json:"event_type"`
	EventID       string            `json:"event_id"`
	CorrelationID string            `json:"correlation_id"`
	OccurredAt    time.Time         `json:"occurred_at"`
	Details       map[string]string `json:"details,omitempty"`
}

// Alert is a raised alert.
type Alert struct {
	ID uint64 `json:"id"`
	Document
	State          string     `json:"state"` // open or acknowledged
	RaisedAt       time.Time  `json:"raised_at"`
	IdempotencyKey string     `json:"idempotency_key"`
	AckedAt        *time.Time `json:"acknowledged_at,omitempty"`
	AckedBy        string     `json:"acknowledged_by,omitempty"`
	AckComment     string     `json:"comment,omitempty"`
}

// Alert states.
const (
	StateOpen         = "open"
	StateAcknowledged = "acknowledged"
)

var (
	bucketAlerts = []byte("alerts")
	bucketMeta   = []byte("alerts_meta")
	keyNext      = []byte("next")
	keyOpen      = []byte("open")
)

// Bolt stores alerts in the pipeline's file.
type Bolt struct {
	db *pipedb.DB

	open *pipedb.Counter // unacknowledged alerts

	mu          sync.Mutex
	raised      map[Severity]int
	raisedTotal map[Severity]int
}

// OpenBolt prepares the buckets.
func OpenBolt(db *pipedb.DB) (*Bolt, error) {
	b := &Bolt{db: db, open: pipedb.NewCounter(keyOpen), raised: map[Severity]int{}, raisedTotal: map[Severity]int{}}
	err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketAlerts); err != nil {
			return err
		}
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		b.open.Load(m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open alerts: %w", err)
	}
	db.Register(b)
	return b, nil
}

// Committed implements pipedb.Hooks.
func (b *Bolt) Committed() {
	b.open.Committed()
	b.mu.Lock()
	defer b.mu.Unlock()
	for s, n := range b.raised {
		b.raisedTotal[s] += n
	}
	clear(b.raised)
}

// Discard implements pipedb.Hooks.
func (b *Bolt) Discard() {
	b.open.Discard()
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.raised)
}

// OpenCount is the number of unacknowledged alerts.
func (b *Bolt) OpenCount() int { return b.open.Value() }

// RaisedTotal is the number of alerts raised since start, by severity.
func (b *Bolt) RaisedTotal() map[Severity]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[Severity]int, len(b.raisedTotal))
	for k, v := range b.raisedTotal {
		out[k] = v
	}
	return out
}

func (b *Bolt) count(tx *bolt.Tx, delta int) error {
	return b.open.Add(tx.Bucket(bucketMeta), delta)
}

// RaiseTx stores an alert from an alert.raise document.
func (b *Bolt) RaiseTx(tx *bolt.Tx, doc []byte, idempotencyKey string, now time.Time) (*Alert, error) {
	var d Document
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("alert document: %w", err)
	}
	id, err := boltkv.NextU64(tx.Bucket(bucketMeta), keyNext)
	if err != nil {
		return nil, err
	}
	a := &Alert{ID: id, Document: d, State: StateOpen, RaisedAt: now.UTC(), IdempotencyKey: idempotencyKey}
	if err := b.put(tx, a); err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.raised[d.Severity]++
	b.mu.Unlock()
	return a, b.count(tx, 1)
}

func (b *Bolt) put(tx *bolt.Tx, a *Alert) error {
	v, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketAlerts).Put(boltkv.U64(a.ID), v)
}

func (b *Bolt) getTx(tx *bolt.Tx, id uint64) (*Alert, error) {
	v := tx.Bucket(bucketAlerts).Get(boltkv.U64(id))
	if v == nil {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, id)
	}
	var a Alert
	if err := json.Unmarshal(v, &a); err != nil {
		return nil, fmt.Errorf("alert %d: %w", id, err)
	}
	return &a, nil
}

// Get reads one alert.
func (b *Bolt) Get(id uint64) (*Alert, error) {
	var a *Alert
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		a, err = b.getTx(tx, id)
		return err
	})
	return a, err
}

// Ack acknowledges an alert.
func (b *Bolt) Ack(id uint64, subject, comment string, now time.Time) (*Alert, error) {
	var a *Alert
	err := b.db.Update(func(tx *bolt.Tx) error {
		var err error
		if a, err = b.getTx(tx, id); err != nil {
			return err
		}
		if a.State == StateAcknowledged {
			return fmt.Errorf("%w: alert %d by %s", ErrAcknowledged, id, a.AckedBy)
		}
		at := now.UTC()
		a.State, a.AckedAt, a.AckedBy, a.AckComment = StateAcknowledged, &at, subject, comment
		if err := b.put(tx, a); err != nil {
			return err
		}
		return b.count(tx, -1)
	})
	return a, err
}

// List returns alerts in a state ("" or "all" for any), newest first,
// optionally before an id.
func (b *Bolt) List(state string, before uint64, limit int) ([]*Alert, error) {
	if limit <= 0 {
		limit = 100
	}
	var out []*Alert
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAlerts).Cursor()
		var k, v []byte
		if before > 0 {
			c.Seek(boltkv.U64(before))
			k, v = c.Prev()
		} else {
			k, v = c.Last()
		}
		for ; k != nil && len(out) < limit; k, v = c.Prev() {
			var a Alert
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("alert %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if state != "" && state != "all" && a.State != state {
				continue
			}
			out = append(out, &a)
		}
		return nil
	})
	return out, err
}

// Prune deletes alerts acknowledged before cutoff, looking at up to limit
// of them after id after, oldest first (pipedb.PruneChunk). Unacknowledged
// ones stay whatever their age. Ids follow raising, so the scan ends at the
// first alert raised at or after cutoff.
func (b *Bolt) Prune(cutoff time.Time, after uint64, limit int) (pipedb.Chunk, error) {
	return b.db.PruneChunk(pipedb.Pruner{
		What:   "alert ",
		Bucket: func(tx *bolt.Tx) (*bolt.Bucket, error) { return tx.Bucket(bucketAlerts), nil },
		Judge: func(_ *bolt.Tx, _, v []byte) (pipedb.Verdict, error) {
			var a struct {
				State    string     `json:"state"`
				RaisedAt time.Time  `json:"raised_at"`
				AckedAt  *time.Time `json:"acknowledged_at"`
			}
			if err := segjson.Unmarshal(v, &a); err != nil {
				return pipedb.Keep, err
			}
			if a.State != StateAcknowledged {
				a.AckedAt = nil
			}
			return pipedb.ByAge(cutoff, a.RaisedAt, a.AckedAt), nil
		},
	}, after, limit)
}
