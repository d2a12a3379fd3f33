package pipeline

import (
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/approvals"
	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/outbox"
)

// maxReplay bounds one bulk replay; the answer says when more remain.
const maxReplay = 1000

// ReplayResult is what one replay did.
type ReplayResult struct {
	Exception uint64 `json:"exception"`
	// Outcome is resolved, still_failing, already_resolved or not_found.
	Outcome string `json:"outcome"`
	// Emitted counts new outbox entries (or holds); Skipped those the
	// event had emitted before.
	Emitted int    `json:"emitted"`
	Skipped int    `json:"skipped"`
	Reason  string `json:"reason,omitempty"`
}

// Replay outcomes.
const (
	ReplayResolved        = "resolved"
	ReplayStillFailing    = "still_failing"
	ReplayAlreadyResolved = "already_resolved"
	ReplayNotFound        = "not_found"
	// ReplayDiscarded is Discard's outcome: resolved without replaying.
	ReplayDiscarded = "discarded"
)

// Replay runs parked events through the pipeline again with today's
// crosswalks and rules. Each action reaches the outbox exactly once,
// however often replay is pressed: outputs an exception already emitted
// are skipped, and the exception is resolved in the same transaction as
// its new outputs.
func (p *Pipeline) Replay(ids []uint64, subject string) ([]ReplayResult, error) {
	out := make([]ReplayResult, 0, len(ids))
	for _, id := range ids {
		r, err := p.replayOne(id, subject)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	p.m.replayed(out)
	return out, nil
}

// ReplayFilter replays the open exceptions matching f (up to 1000, oldest
// first); more reports whether others remain.
func (p *Pipeline) ReplayFilter(f exceptions.Filter, subject string) (res []ReplayResult, more bool, err error) {
	f.State = string(exceptions.StateOpen)
	f.Limit = maxReplay + 1
	list, err := p.exceptions.List(f)
	if err != nil {
		return nil, false, err
	}
	if len(list) > maxReplay {
		list, more = list[:maxReplay], true
	}
	ids := make([]uint64, len(list))
	for i, e := range list {
		ids[len(list)-1-i] = e.ID // oldest first keeps the events' order
	}
	res, err = p.Replay(ids, subject)
	return res, more, err
}

func (p *Pipeline) replayOne(id uint64, subject string) (ReplayResult, error) {
	res := ReplayResult{Exception: id}
	exc, err := p.exceptions.Get(id)
	if errors.Is(err, exceptions.ErrNotFound) {
		res.Outcome = ReplayNotFound
		return res, nil
	}
	if err != nil {
		return res, err
	}
	if exc.State != exceptions.StateOpen {
		res.Outcome = ReplayAlreadyResolved
		return res, nil
	}
	now := p.now()
	// Process outside the transaction; the transaction re-checks the state
	// so two concurrent presses still emit once.
	var r *result
	if exc.Delivery == nil && !exceptions.Operational(exc.Kind) && exc.Event != nil {
		rr := p.plan.process(journal.Record{Position: exc.Position, Producer: exc.Producer, EventID: exc.EventID, Event: exc.Event},
			p.crosswalks.Snapshot(), now, id)
		r = &rr
	}
	err = p.db.Update(func(tx *bolt.Tx) error {
		res = ReplayResult{Exception: id}
		cur, err := p.exceptions.GetTx(tx, id)
		if err != nil {
			return err
		}
		if cur.State != exceptions.StateOpen {
			res.Outcome = ReplayAlreadyResolved
			return nil
		}
		cur.Replays++
		cur.UpdatedAt = now.UTC()
		var resolution string
		switch {
		case cur.Delivery != nil:
			e, err := p.outbox.GetTx(tx, cur.Delivery.Destination, cur.Delivery.Seq)
			if err != nil {
				return err
			}
			if e.State == outbox.StateFailed {
				e.State, e.Message, e.CompletedAt = outbox.StatePending, "", nil
				if err := p.outbox.PutTx(tx, &e); err != nil {
					return err
				}
				res.Emitted = 1
			}
			resolution = fmt.Sprintf("requeued %s/%d for delivery", e.Destination, e.Seq)
		case exceptions.Operational(cur.Kind) || cur.Event == nil:
			resolution = "acknowledged"
		default:
			app := p.outbox.NewAppender(tx)
			a, err := p.applyTx(tx, app, r, cur, now)
			if err != nil {
				return err
			}
			if err := app.Flush(); err != nil {
				return err
			}
			res.Emitted, res.Skipped = a.emitted, a.skipped
			if r.exc != nil {
				// Still failing: keep it open with today's reason.
				cur.Kind, cur.Reason, cur.FailedActions, cur.Lineage = r.exc.Kind, r.exc.Reason, r.exc.FailedActions, r.exc.Lineage
				res.Outcome, res.Reason = ReplayStillFailing, cur.Reason
				return p.exceptions.PutTx(tx, cur)
			}
			resolution = fmt.Sprintf("replayed: %d new, %d sent before", a.emitted, a.skipped)
		}
		at := now.UTC()
		cur.State, cur.ResolvedAt, cur.ResolvedBy, cur.Resolution = exceptions.StateResolved, &at, subject, resolution
		res.Outcome = ReplayResolved
		return p.exceptions.PutTx(tx, cur)
	})
	return res, err
}

// parkDeliveryTx turns an outbox entry that failed for good into a
// replayable exception (outbox.Bolt.OnFailed).
func (p *Pipeline) parkDeliveryTx(tx *bolt.Tx, e *outbox.Entry) error {
	l := e.Lineage
	exc := &exceptions.Exception{Kind: exceptions.KindDelivery, CreatedAt: p.now(), Plant: l.Plant, EventType: l.EventType, EventID: l.EventID,
		CorrelationID: l.CorrelationID, Position: l.JournalPosition, Producer: l.Producer, Lineage: l,
		Reason:   fmt.Sprintf("delivery of %s to %s failed: %s", e.Action, e.Destination, e.Message),
		Delivery: &exceptions.Delivery{Destination: e.Destination, Seq: e.Seq, Action: e.Action, IdempotencyKey: e.IdempotencyKey}}
	if err := p.exceptions.AddTx(tx, exc); err != nil {
		return err
	}
	return addTraceTx(tx, l.CorrelationID, l.JournalPosition, fmt.Sprintf("x:%d", exc.ID))
}

// ErrBadDecision is returned for a decision that is neither approve nor
// reject.
var ErrBadDecision = errors.New("decision must be approve or reject")

// Decide approves or rejects a held action, then releases what may leave
// its queue, in order.
func (p *Pipeline) Decide(id uint64, decision, subject, comment string) (*approvals.Approval, int, error) {
	var approve bool
	switch decision {
	case "approve":
		approve = true
	case "reject":
	default:
		return nil, 0, fmt.Errorf("%w, not %q", ErrBadDecision, decision)
	}
	now := p.now()
	var a *approvals.Approval
	var released int
	err := p.db.Update(func(tx *bolt.Tx) error {
		var err error
		if a, err = p.approvals.DecideTx(tx, id, approve, subject, comment, now); err != nil {
			return err
		}
		released, err = p.approvals.ReleaseTx(tx, a.Destination, a.OrderingKey, func(value []byte) (uint64, error) {
			return p.releaseTx(tx, value)
		})
		if err != nil {
			return err
		}
		a, err = p.approvals.GetTx(tx, id)
		return err
	})
	if err != nil {
		return a, 0, err
	}
	p.log.Info("approval decided", "approval", id, "decision", decision, "by", subject, "released", released)
	return a, released, nil
}

// releaseTx appends a released entry to the outbox and points its trace at
// the outbox entry.
func (p *Pipeline) releaseTx(tx *bolt.Tx, value []byte) (uint64, error) {
	e, err := outbox.Decode(value)
	if err != nil {
		return 0, fmt.Errorf("released entry: %w", err)
	}
	seq, err := p.outbox.AppendTx(tx, e.Destination, value)
	if err != nil {
		return 0, err
	}
	corr := e.Lineage.CorrelationID
	tb := tx.Bucket(bucketTrace)
	k := traceKey(corr, e.Lineage.JournalPosition)
	refs, _ := traceRefs(corr, tb.Get(k))
	queued := "q:" + e.Destination + ":" + e.IdempotencyKey
	kept := refs[:0]
	for _, r := range refs {
		if r != queued {
			kept = append(kept, r)
		}
	}
	kept = append(kept, fmt.Sprintf("o:%s:%d", e.Destination, seq))
	return seq, tb.Put(k, traceValue(corr, strings.Join(kept, ",")))
}

// AckAlert acknowledges an alert.
func (p *Pipeline) AckAlert(id uint64, subject, comment string) error {
	_, err := p.alerts.Ack(id, subject, comment, p.now())
	return err
}

// ErrCommentRequired is returned by Discard without a comment: giving up on
// an event or a delivery is a decision the audit trail must explain.
var ErrCommentRequired = errors.New("a comment is required to discard an exception")

// Discard resolves an open exception without replaying it: the event is not
// processed again and a failed delivery stays failed (it never leaves), but
// the ordering key it held back is freed for the entries behind it. The
// subject and comment are recorded as the resolution.
func (p *Pipeline) Discard(id uint64, subject, comment string) (ReplayResult, error) {
	res := ReplayResult{Exception: id}
	if comment == "" {
		return res, ErrCommentRequired
	}
	now := p.now().UTC()
	err := p.db.Update(func(tx *bolt.Tx) error {
		cur, err := p.exceptions.GetTx(tx, id)
		if errors.Is(err, exceptions.ErrNotFound) {
			res.Outcome = ReplayNotFound
			return nil
		}
		if err != nil {
			return err
		}
		if cur.State != exceptions.StateOpen {
			res.Outcome = ReplayAlreadyResolved
			return nil
		}
		cur.State, cur.ResolvedAt, cur.ResolvedBy, cur.UpdatedAt = exceptions.StateResolved, &now, subject, now
		cur.Resolution = "discarded: " + comment
		res.Outcome = ReplayDiscarded
		return p.exceptions.PutTx(tx, cur)
	})
	return res, err
}
