package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/outbox"
)

// deliverBuiltin delivers the outbox of a built-in destination: `alerts`
// stores alerts, `log` logs each entry (debug) and a summary per batch
// (info). Connector destinations are delivered by the delivery engine.
func (p *Pipeline) deliverBuiltin(ctx context.Context, d Destination) {
	log := p.log.With("destination", d.Name)
	var after uint64
	// The log destination summarises at info at most every summaryEvery:
	// one line per batch would be one line per event at plant rates.
	counts, lastSummary := map[string]int{}, time.Now()
	summarize := func() {
		if len(counts) > 0 {
			log.Info("log destination delivered entries", "actions", counts, "since", lastSummary.Format(time.RFC3339))
			counts = map[string]int{}
		}
		lastSummary = time.Now()
	}
	defer summarize()
	for {
		if ctx.Err() != nil {
			// Stop between batches: what is left stays pending in the
			// outbox for the next start, so a shutdown never waits for a
			// backlog to drain.
			return
		}
		changed := p.outbox.Changed(d.Name)
		es, err := p.outbox.PendingSnapshots(d.Name, after, 500)
		if err == nil && len(es) == 0 && after > 0 && p.outbox.Depth(d.Name) > 0 {
			// An entry behind the read position became pending again
			// (a replayed delivery exception): rescan from the start.
			after = 0
			continue
		}
		if err == nil && len(es) > 0 {
			err = p.deliverBatch(d, es)
		}
		if err != nil {
			log.Error("built-in delivery failed; retrying", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if len(es) > 0 {
			after = es[len(es)-1].Seq
			p.m.delivered.WithLabelValues(d.Name).Add(float64(len(es)))
			if d.Type == "log" {
				debug := log.Enabled(ctx, slog.LevelDebug)
				for i := range es {
					e := &es[i]
					counts[e.Action]++
					if !debug {
						continue
					}
					log.Debug("delivered to log destination", "action", e.Action, "ordering_key", e.OrderingKey,
						"idempotency_key", e.IdempotencyKey, "correlation_id", e.Lineage.CorrelationID, "document", string(e.Document))
				}
				if time.Since(lastSummary) >= summaryEvery {
					summarize()
				}
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(summaryEvery):
			summarize()
		}
	}
}

// summaryEvery is how often the log destination logs its summary.
const summaryEvery = time.Minute

// deliverBatch completes entries read with PendingSnapshots, which spares
// decoding each entry a second time when it is rewritten.
func (p *Pipeline) deliverBatch(d Destination, es []outbox.Snapshot) error {
	now := p.now()
	outcomes := make([]outbox.Outcome, len(es))
	for i := range es {
		outcomes[i] = outbox.Outcome{Seq: es[i].Seq, State: outbox.StateDelivered, ExternalRef: "log", Attempts: 1, At: now}
	}
	return p.db.Update(func(tx *bolt.Tx) error {
		var raise func(e *outbox.Entry) error
		if d.Type == "alerts" {
			raise = func(e *outbox.Entry) error {
				a, err := p.alerts.RaiseTx(tx, e.Document, e.IdempotencyKey, now)
				if err != nil {
					// A document the alerts store cannot read is parked
					// for people instead of blocking every later alert.
					e.State, e.Message = outbox.StateFailed, err.Error()
					return nil
				}
				e.ExternalRef = fmt.Sprintf("alert:%d", a.ID)
				return nil
			}
		}
		return p.outbox.CompleteSnapshotsTx(tx, d.Name, es, outcomes, raise)
	})
}
