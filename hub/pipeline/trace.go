package pipeline

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/alerts"
	"github.com/plantsync/plantsync/hub/approvals"
	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/outbox"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// ErrTraceNotFound is returned for a correlation id with no recorded path.
var ErrTraceNotFound = errors.New("no trace for this correlation id")

// maxTraceEvents bounds one trace (a correlation id shared by very many
// events would otherwise read the whole store).
const maxTraceEvents = 1000

// TraceEvent is one journaled event on a trace.
type TraceEvent struct {
	Position   uint64          `json:"journal_position"`
	ReceivedAt *time.Time      `json:"received_at,omitempty"`
	Producer   string          `json:"producer,omitempty"`
	Event      json.RawMessage `json:"event,omitempty"`
	// Pruned is set when journal retention removed the event.
	Pruned bool `json:"pruned,omitempty"`
}

// Queued is an action waiting behind a held one of its ordering key.
type Queued struct {
	Destination    string `json:"destination"`
	IdempotencyKey string `json:"idempotency_key"`
}

// Trace is the whole path of one correlation id: events, what they became
// in the outbox, approvals, exceptions and alerts, each with its lineage
// (crosswalk versions, rule).
type Trace struct {
	CorrelationID string                  `json:"correlation_id"`
	Events        []TraceEvent            `json:"events"`
	Outbox        []outbox.Entry          `json:"outbox"`
	Queued        []Queued                `json:"queued,omitempty"`
	Approvals     []*approvals.Approval   `json:"approvals"`
	Exceptions    []*exceptions.Exception `json:"exceptions"`
	Alerts        []*alerts.Alert         `json:"alerts"`
	Truncated     bool                    `json:"truncated,omitempty"`
}

var traceJSON = protojson.MarshalOptions{UseProtoNames: true}

// Trace returns the path of a correlation id. Events that yielded nothing
// (no workflow, e.g. machine telemetry) are not indexed.
func (p *Pipeline) Trace(corr string) (*Trace, error) {
	t := &Trace{CorrelationID: corr, Events: []TraceEvent{}, Outbox: []outbox.Entry{}, Approvals: []*approvals.Approval{},
		Exceptions: []*exceptions.Exception{}, Alerts: []*alerts.Alert{}}
	type hit struct {
		pos  uint64
		refs []string
	}
	var hits []hit
	err := p.db.View(func(tx *bolt.Tx) error {
		part := tracePartition(corr)
		c := tx.Bucket(bucketTrace).Cursor()
		for k, v := c.Seek([]byte{part}); k != nil && k[0] == part; k, v = c.Next() {
			refs, ok := traceRefs(corr, v)
			if !ok || len(k) != 9 {
				continue
			}
			if len(hits) == maxTraceEvents {
				t.Truncated = true
				break
			}
			hits = append(hits, hit{pos: binary.BigEndian.Uint64(k[1:]), refs: refs})
		}
		for _, h := range hits {
			for _, ref := range h.refs {
				if err := p.resolveTx(tx, t, ref); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(hits) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrTraceNotFound, corr)
	}
	for _, h := range hits {
		ev := TraceEvent{Position: h.pos}
		recs, err := p.journal.Read(h.pos-1, 1)
		if err != nil {
			return nil, err
		}
		if len(recs) == 1 && recs[0].Position == h.pos {
			r := recs[0]
			ev.ReceivedAt, ev.Producer = &r.ReceivedAt, r.Producer
			var e pb.Event
			if proto.Unmarshal(r.Event, &e) == nil {
				ev.Event, _ = traceJSON.Marshal(&e)
			}
		} else {
			ev.Pruned = true
		}
		t.Events = append(t.Events, ev)
	}
	for _, e := range t.Outbox {
		if id, ok := strings.CutPrefix(e.ExternalRef, "alert:"); ok && e.Destination == alerts.Destination {
			n, _ := strconv.ParseUint(id, 10, 64)
			if a, err := p.alerts.Get(n); err == nil {
				t.Alerts = append(t.Alerts, a)
			}
		}
	}
	return t, nil
}

func (p *Pipeline) resolveTx(tx *bolt.Tx, t *Trace, ref string) error {
	kind, rest, _ := strings.Cut(ref, ":")
	switch kind {
	case "o":
		dest, seqs, _ := strings.Cut(rest, ":")
		seq, _ := strconv.ParseUint(seqs, 10, 64)
		e, err := p.outbox.GetTx(tx, dest, seq)
		if errors.Is(err, outbox.ErrNotFound) || errors.Is(err, outbox.ErrUnknownDestination) {
			return nil
		}
		if err != nil {
			return err
		}
		t.Outbox = append(t.Outbox, e)
	case "a":
		id, _ := strconv.ParseUint(rest, 10, 64)
		a, err := p.approvals.GetTx(tx, id)
		if errors.Is(err, approvals.ErrNotFound) {
			return nil // pruned by storage.resolved_retention
		}
		if err != nil {
			return err
		}
		t.Approvals = append(t.Approvals, a)
	case "x":
		id, _ := strconv.ParseUint(rest, 10, 64)
		e, err := p.exceptions.GetTx(tx, id)
		if errors.Is(err, exceptions.ErrNotFound) {
			return nil // pruned by storage.resolved_retention
		}
		if err != nil {
			return err
		}
		e.Event = nil // the events are listed once, above
		t.Exceptions = append(t.Exceptions, e)
	case "q":
		dest, key, _ := strings.Cut(rest, ":")
		t.Queued = append(t.Queued, Queued{Destination: dest, IdempotencyKey: key})
	}
	return nil
}
