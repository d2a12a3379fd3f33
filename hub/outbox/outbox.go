package outbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// ErrNotFound is returned for an entry that does not exist.
var ErrNotFound = errors.New("outbox entry not found")

// ErrUnknownDestination names a destination the outbox does not serve.
var ErrUnknownDestination = errors.New("unknown destination")

// State of an entry.
type State string

// States. An entry starts pending and ends delivered or failed; a failed
// entry becomes an exception and a replay makes it pending again.
const (
	StatePending   State = "pending"
	StateDelivered State = "delivered"
	StateFailed    State = "failed"
)

func (s State) byte() byte {
	switch s {
	case StateDelivered:
		return 'd'
	case StateFailed:
		return 'f'
	}
	return 'p'
}

func stateOf(b byte) State {
	switch b {
	case 'd':
		return StateDelivered
	case 'f':
		return StateFailed
	}
	return StatePending
}

// IdempotencyKey derives the key of one action of one event at one
// destination: the same inputs give the same key on every hub, after any
// crash, replay or restore. 128 bits of SHA-256, hex (32 characters), so it
// fits the reference fields of ERP documents.
func IdempotencyKey(eventID, destination, action string) string {
	h := sha256.New()
	h.Write([]byte(eventID))
	h.Write([]byte{0})
	h.Write([]byte(destination))
	h.Write([]byte{0})
	h.Write([]byte(action))
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// Lineage says where an entry (or exception) came from.
type Lineage struct {
	EventID       string `json:"event_id"`
	CorrelationID string `json:"correlation_id"`
	EventType     string `json:"event_type"`
	// Plant is the plant code as the producer sent it.
	Plant           string `json:"plant"`
	Producer        string `json:"producer,omitempty"`
	JournalPosition uint64 `json:"journal_position"`
	// Rule names the workflow step (event/action@destination) that yielded
	// the action.
	Rule string `json:"rule,omitempty"`
	// Crosswalks is the version of every crosswalk table consulted.
	Crosswalks  map[string]uint64 `json:"crosswalks,omitempty"`
	ProcessedAt time.Time         `json:"processed_at"`
	// Approval is the approval that held the action, if any.
	Approval uint64 `json:"approval,omitempty"`
	// ReplayOf is the exception whose replay yielded the action, if any.
	ReplayOf uint64 `json:"replay_of,omitempty"`
}

// Entry is one action for one destination.
type Entry struct {
	Destination string `json:"destination"`
	// Seq orders the destination's entries; it is the storage key.
	Seq            uint64 `json:"seq,omitempty"`
	IdempotencyKey string `json:"idempotency_key"`
	Action         string `json:"action"`
	// OrderingKey groups entries that must be delivered in order (e.g. one
	// production order); different keys may go in parallel.
	OrderingKey string `json:"ordering_key"`
	// Document is the JSON to deliver, already in the destination's codes.
	Document  json.RawMessage `json:"document"`
	CreatedAt time.Time       `json:"created_at"`
	State     State           `json:"state"`
	Lineage   Lineage         `json:"lineage"`

	// Filled in by delivery.
	Attempts    int        `json:"attempts,omitempty"`
	ExternalRef string     `json:"external_ref,omitempty"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
	Message     string     `json:"message,omitempty"`
}

// Outcome is the result of delivering one entry.
type Outcome struct {
	Seq         uint64
	State       State // StateDelivered or StateFailed
	ExternalRef string
	Message     string
	Attempts    int
	At          time.Time
}

// Query selects entries for listing.
type Query struct {
	Destination string
	State       State // "" for any
	// Ascending pages forward from After (oldest first); otherwise pages
	// backward from Before (0: the newest), newest first.
	Ascending bool
	After     uint64
	Before    uint64
	Limit     int
}

// Store is what the delivery engine needs from the outbox.
type Store interface {
	// Destinations lists the destinations the outbox serves.
	Destinations() []string
	// Pending returns up to limit pending entries of dest with Seq > after,
	// in Seq order.
	Pending(dest string, after uint64, limit int) ([]Entry, error)
	// Get returns one entry.
	Get(dest string, seq uint64) (Entry, error)
	// Complete records outcomes atomically. A failed outcome also parks the
	// entry as a replayable exception.
	Complete(dest string, outcomes []Outcome) error
	// Depth is the number of pending entries of dest.
	Depth(dest string) int
	// Changed is closed when entries become pending at dest.
	Changed(dest string) <-chan struct{}
	// List pages through entries for the API.
	List(q Query) ([]Entry, error)
}
