package pipeline

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Retention bounds what the pipeline's file keeps of finished work.
type Retention struct {
	// Delivered is how long delivered outbox entries are kept (0: for
	// ever). Pending and failed entries are kept whatever their age.
	Delivered time.Duration
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
		if _, _, err := p.Prune(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("pruning the pipeline's file failed; retrying next pass", "error", err)
		}
	}
}

// Prune deletes delivered outbox entries older than Retention.Delivered,
// and the trace entries of events journal retention has pruned, except
// those that lead to an exception, an approval or an action queued behind
// one. It works in short transactions and stops between them when ctx
// ends. It returns how many of each it deleted.
func (p *Pipeline) Prune(ctx context.Context) (entries, traces int, err error) {
	defer func() {
		if entries > 0 || traces > 0 {
			p.log.Info("pruned the pipeline's file", "delivered_outbox_entries", entries, "trace_entries", traces)
		}
	}()
	if p.opts.Retention.Delivered > 0 {
		cutoff := p.now().Add(-p.opts.Retention.Delivered)
		for _, d := range p.outbox.Destinations() {
			var after uint64
			for more := true; more; {
				if err := ctx.Err(); err != nil {
					return entries, traces, err
				}
				var n int
				n, after, more, err = p.outbox.PruneDelivered(d, cutoff, after, pruneChunk)
				if err != nil {
					return entries, traces, err
				}
				entries += n
				p.m.outboxPruned.WithLabelValues(d).Add(float64(n))
			}
		}
	}
	st := p.journal.Stats()
	below := st.FirstPosition // the oldest record the journal keeps
	if below == 0 {
		below = st.LastPosition + 1 // it keeps none
	}
	var from []byte
	for more := true; more; {
		if err := ctx.Err(); err != nil {
			return entries, traces, err
		}
		var n int
		n, from, more, err = p.pruneTrace(from, below, pruneChunk)
		if err != nil {
			return entries, traces, err
		}
		traces += n
		p.m.tracePruned.Add(float64(n))
	}
	return entries, traces, nil
}

// pruneTrace deletes the trace entries of journal positions below below
// that lead to nothing still open, looking at up to limit entries from key
// from on (nil: the start). When limit cut it short, more is set and next
// is where to go on from.
func (p *Pipeline) pruneTrace(from []byte, below uint64, limit int) (n int, next []byte, more bool, err error) {
	next = from
	err = p.db.Update(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTrace)
		c := tb.Cursor()
		var doomed [][]byte
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
				if !keepsTrace(v) {
					doomed = append(doomed, next)
				}
			}
		}
		for _, k := range doomed {
			if err := tb.Delete(k); err != nil {
				return err
			}
		}
		n = len(doomed)
		return nil
	})
	if err != nil {
		return 0, from, false, err
	}
	return n, next, more, nil
}

// keepsTrace reports whether a trace value names an exception ("x:"), an
// approval ("a:") or an action queued behind one ("q:"): those traces stay,
// so what people still act on keeps its path.
func keepsTrace(v []byte) bool {
	_, refs, _ := bytes.Cut(v, []byte{0})
	for ref := range bytes.SplitSeq(refs, []byte(",")) {
		if bytes.HasPrefix(ref, []byte("x:")) || bytes.HasPrefix(ref, []byte("a:")) || bytes.HasPrefix(ref, []byte("q:")) {
			return true
		}
	}
	return false
}
