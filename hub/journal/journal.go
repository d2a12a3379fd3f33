package journal

import (
	"context"
	"errors"
	"time"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// ErrClosed is returned for commits after Close.
var ErrClosed = errors.New("journal closed")

// Journal is the storage contract the hub's ingest and pipeline rely on.
type Journal interface {
	// CommitAsync queues a batch; done runs once it is durably committed
	// (or failed). Batches complete in the order they were queued.
	CommitAsync(ctx context.Context, b *Batch, done func(Outcome, error)) error
	// Commit queues a batch and waits for it.
	Commit(ctx context.Context, b *Batch) (Outcome, error)
	// Resume is the highest sequence committed for (producer, epoch).
	Resume(producer, epoch string) (uint64, error)
	// Read returns journaled records with positions above after, in order.
	Read(after uint64, limit int) ([]Record, error)
	// Rejected returns refused events with ids above after, in order.
	Rejected(after uint64, limit int) ([]Record, error)
	// Agents lists what is known of every agent that ever sent.
	Agents() ([]AgentState, error)
	// Stats is a snapshot for metrics and health.
	Stats() Stats
	// Changed is closed after the next commit that journals events.
	Changed() <-chan struct{}
	Close() error
}

// TailReader is what a journal may offer the one reader that processes
// every record (the pipeline), apart from the Journal the others hold:
// ReadDecoded is Read, except that records still held in memory since
// their commit come with the producer's decoded event in Record.Decoded,
// which then belongs to the caller (a second reader would take it away);
// the others come from storage with Decoded nil.
type TailReader interface {
	ReadDecoded(after uint64, limit int) ([]Record, error)
}

// Batch is one producer's consecutive events.
type Batch struct {
	// Producer is "agent:<id>", "partner:<name>" or "erp:<destination>".
	Producer string
	Epoch    string
	// Agent, when set, updates the agent registry.
	Agent  *AgentInfo
	Events []Incoming
	// LastSequence is the batch's last producer sequence; the watermark
	// moves to it. Zero for producers that do not number their events.
	LastSequence uint64
}

// AgentInfo identifies the agent behind a batch.
type AgentInfo struct {
	ID, Plant string
}

// Incoming is one event as received.
type Incoming struct {
	Sequence uint64 // 0 when the producer does not number events
	ID       string
	Raw      []byte // the encoded plantsync.v1.Event
	// Rejected, when set, keeps the event in the rejected store with this
	// reason instead of journaling it.
	Rejected string
	// Decoded, when set, is Raw decoded by the producer, handed on to
	// ReadDecoded so the pipeline does not decode Raw again. The journal
	// never reads it; the producer must not touch it once queued.
	Decoded *pb.Event
}

// Status of one incoming event.
type Status int

// Statuses of Result.
const (
	StatusJournaled Status = iota + 1
	StatusDuplicate
	StatusRejected
)

func (s Status) String() string {
	switch s {
	case StatusJournaled:
		return "journaled"
	case StatusDuplicate:
		return "duplicate"
	case StatusRejected:
		return "rejected"
	}
	return "unknown"
}

// Result is what became of one incoming event.
type Result struct {
	Status Status
	// Position is the journal position (journaled), the first copy's
	// position (duplicate by id, when known) or the rejected-store id.
	Position uint64
}

// Outcome of a committed batch.
type Outcome struct {
	Results                         []Result
	Journaled, Duplicates, Rejected int
	// Watermark is the producer's highest committed sequence afterwards.
	Watermark uint64
}

// Record is one stored event.
type Record struct {
	Position   uint64
	ReceivedAt time.Time
	Producer   string
	Epoch      string
	EventID    string
	Event      []byte
	Reason     string // rejected records only
	// Decoded is Event decoded, set only by ReadDecoded and only for
	// records handed over from memory; it belongs to the caller.
	Decoded *pb.Event
}

// AgentState is the registry entry of one agent.
type AgentState struct {
	ID           string `json:"id"`
	Plant        string `json:"plant"`
	Epoch        string `json:"epoch"`
	LastSequence uint64 `json:"last_sequence"`
	// DuplicateEvents and RejectedEvents count this epoch's sequences that
	// were dropped as id duplicates or kept as rejected: with the journaled
	// ones they account for every sequence through LastSequence, except
	// those reported dropped by buffer.overflow events.
	DuplicateEvents uint64    `json:"duplicate_events"`
	RejectedEvents  uint64    `json:"rejected_events"`
	LastSeen        time.Time `json:"last_seen"`
}

// Stats is a snapshot of the journal.
type Stats struct {
	LastPosition   uint64
	FirstPosition  uint64
	Records        uint64
	Bytes          int64
	JournaledTotal uint64
	DuplicateTotal uint64
	RejectedTotal  uint64
	PrunedTotal    uint64
	Degraded       string
}
