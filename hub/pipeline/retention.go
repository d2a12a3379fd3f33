package pipeline

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/pipedb"
)

// Retention bounds what the pipeline's file keeps of finished work.
type Retention struct {
	// Delivered is how long delivered outbox entries are kept (0: for
	// ever). Pending and failed entries are kept whatever their age.
	Delivered time.Duration
	// Resolved is how long resolved exceptions, decided approvals and
	// acknowledged alerts are kept after the decision (0: for ever). Open
	// ones are kept whatever their age.
	Resolved time.Duration
	// Interval between pruning passes (0: never prune).
	Interval time.Duration
}

// pruneChunk bounds one pruning transaction so commits are never held
// long; a pass runs chunks until nothing is left.
const pruneChunk = 10000

// pruneLoop prunes every Retention.Interval until ctx ends.
func (p *Pipeline) pruneLoop(ctx context.Context) {
	t := time.NewTicker(p.opts.Retention.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := p.Prune(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("pruning the pipeline's file failed; retrying next pass", "error", err)
		}
	}
}

// Pruned counts what one Prune deleted.
type Pruned struct {
	Entries, Traces, Exceptions, Approvals, Alerts int
}

func (n Pruned) any() bool { return n != Pruned{} }

// Prune deletes delivered outbox entries older than Retention.Delivered;
// exceptions resolved, approvals decided and alerts acknowledged longer ago
// than Retention.Resolved; and the trace entries of events journal
// retention has pruned, except those that lead to an exception or an
// approval still kept or to an action queued behind one. It works in short
// transactions and stops between them when ctx ends.
func (p *Pipeline) Prune(ctx context.Context) (n Pruned, err error) {
	defer func() {
		if n.any() {
			p.log.Info("pruned the pipeline's file", "delivered_outbox_entries", n.Entries, "trace_entries", n.Traces,
				"resolved_exceptions", n.Exceptions, "decided_approvals", n.Approvals, "acknowledged_alerts", n.Alerts)
		}
	}()
	// chunks runs one store's pruning chunk by chunk. A record it cannot
	// read is kept and logged (once per record while the hub runs); an
	// error of the file ends that store's pass, the others go on.
	var errs []error
	chunks := func(prune func(after uint64) (pipedb.Chunk, error), count func(int)) (total int) {
		var after uint64
		for more := true; more; {
			if ctx.Err() != nil {
				return total
			}
			c, err := prune(after)
			for _, u := range c.Unreadable {
				p.reportUnreadable(u)
			}
			if err != nil {
				errs = append(errs, err)
				return total
			}
			after, more = c.Next, c.More
			total += c.N
			count(c.N)
		}
		return total
	}
	if p.opts.Retention.Delivered > 0 {
		cutoff := p.now().Add(-p.opts.Retention.Delivered)
		for _, d := range p.outbox.Destinations() {
			n.Entries += chunks(func(after uint64) (pipedb.Chunk, error) {
				return p.outbox.PruneDelivered(d, cutoff, after, pruneChunk)
			}, func(k int) { p.m.outboxPruned.WithLabelValues(d).Add(float64(k)) })
		}
	}
	if p.opts.Retention.Resolved > 0 {
		cutoff := p.now().Add(-p.opts.Retention.Resolved)
		// A pruned delivery exception takes the failed entry it parked
		// along: nothing can replay it any more.
		deleteFailed := func(tx *bolt.Tx, d *exceptions.Delivery) error {
			return p.outbox.DeleteFailedTx(tx, d.Destination, d.Seq)
		}
		for _, s := range []struct {
			kind  string
			prune func(time.Time, uint64, int) (pipedb.Chunk, error)
			total *int
		}{
			{"exception", func(c time.Time, after uint64, limit int) (pipedb.Chunk, error) {
				return p.exceptions.Prune(c, after, limit, deleteFailed)
			}, &n.Exceptions},
			{"approval", p.approvals.Prune, &n.Approvals},
			{"alert", p.alerts.Prune, &n.Alerts},
		} {
			*s.total += chunks(func(after uint64) (pipedb.Chunk, error) { return s.prune(cutoff, after, pruneChunk) },
				func(k int) { p.m.resolvedPruned.WithLabelValues(s.kind).Add(float64(k)) })
		}
	}
	if err := ctx.Err(); err != nil {
		return n, err
	}
	if len(errs) > 0 {
		return n, errors.Join(errs...)
	}
	st := p.journal.Stats()
	below := st.FirstPosition // the oldest record the journal keeps
	if below == 0 {
		below = st.LastPosition + 1 // it keeps none
	}
	var from []byte
	for more := true; more; {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		var k int
		k, from, more, err = p.pruneTrace(from, below, pruneChunk)
		if err != nil {
			return n, err
		}
		n.Traces += k
		p.m.tracePruned.Add(float64(k))
	}
	return n, nil
}

// reportUnreadable logs a record pruning had to keep because it could not
// be read, once per record while the hub runs.
func (p *Pipeline) reportUnreadable(err error) {
	p.pruneMu.Lock()
	defer p.pruneMu.Unlock()
	if p.unreadable == nil {
		p.unreadable = map[string]bool{}
	}
	if p.unreadable[err.Error()] {
		return
	}
	p.unreadable[err.Error()] = true
	p.log.Warn("pruning keeps a record of pipeline.db it cannot read; it stays until removed by hand (bbolt CLI, with the hub stopped)",
		"error", err)
}

// pruneTrace deletes the trace entries of journal positions below below
// that lead to nothing still open, looking at up to limit entries from key
// from on (nil: the start). It looks in a read transaction and takes the
// write lock only when something may go. When limit cut it short, more is
// set and next is where to go on from.
func (p *Pipeline) pruneTrace(from []byte, below uint64, limit int) (n int, next []byte, more bool, err error) {
	next = from
	var doomed [][]byte
	err = p.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTrace).Cursor()
		scanned := 0
		first := byte(0)
		if from != nil {
			first = from[0]
		}
		for part := first; part < tracePartitions && !more; part++ {
			k, v := c.Seek([]byte{part})
			if from != nil && part == from[0] {
				if k, v = c.Seek(from); bytes.Equal(k, from) {
					k, v = c.Next()
				}
			}
			for ; k != nil && k[0] == part; k, v = c.Next() {
				if len(k) != 9 || binary.BigEndian.Uint64(k[1:]) >= below {
					break
				}
				if scanned == limit {
					more = true
					break
				}
				scanned++
				next = bytes.Clone(k)
				if !p.keepsTrace(tx, v) {
					doomed = append(doomed, next)
				}
			}
		}
		return nil
	})
	if err == nil && len(doomed) > 0 {
		traces := func(tx *bolt.Tx) (*bolt.Bucket, error) { return tx.Bucket(bucketTrace), nil }
		n, err = p.db.DeleteIf(traces, doomed, func(tx *bolt.Tx, _, v []byte) (bool, error) { return !p.keepsTrace(tx, v), nil })
	}
	if err != nil {
		return 0, from, false, err
	}
	return n, next, more, nil
}

// keepsTrace reports whether a trace value names an exception ("x:") or an
// approval ("a:") still kept, or an action queued behind a held one ("q:"):
// those traces stay, so what people still act on or look up keeps its path.
// Once retention pruned the exception or approval, its trace may go too.
func (p *Pipeline) keepsTrace(tx *bolt.Tx, v []byte) bool {
	_, refs, _ := bytes.Cut(v, []byte{0})
	for ref := range bytes.SplitSeq(refs, []byte(",")) {
		kind, id, _ := bytes.Cut(ref, []byte(":"))
		switch string(kind) {
		case "q":
			return true
		case "x", "a":
			n, err := strconv.ParseUint(string(id), 10, 64)
			if err != nil {
				return true // not ours to judge: keep it
			}
			if kind[0] == 'x' && p.exceptions.ExistsTx(tx, n) || kind[0] == 'a' && p.approvals.ExistsTx(tx, n) {
				return true
			}
		}
	}
	return false
}
