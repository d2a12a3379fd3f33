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
		if _, _, err := p.Prune(); err != nil {
			p.log.Error("pruning the pipeline's file failed; retrying next pass", "error", err)
		}
	}
}

// Prune deletes delivered outbox entries older than Retention.Delivered,
// and the trace entries of events journal retention has pruned, except
// those that lead to an exception. It returns how many of each it deleted.
func (p *Pipeline) Prune() (entries, traces int, err error) {
	if p.opts.Retention.Delivered > 0 {
		cutoff := p.now().Add(-p.opts.Retention.Delivered)
		for _, d := range p.outbox.Destinations() {
			for more := true; more; {
				var n int
				n, more, err = p.outbox.PruneDelivered(d, cutoff, pruneChunk)
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
	for more := true; more; {
		var n int
		n, more, err = p.pruneTrace(below, pruneChunk)
		if err != nil {
			return entries, traces, err
		}
		traces += n
		p.m.tracePruned.Add(float64(n))
	}
	if entries > 0 || traces > 0 {
		p.log.Info("pruned the pipeline's file", "delivered_outbox_entries", entries, "trace_entries", traces)
	}
	return entries, traces, nil
}

// pruneTrace deletes up to limit trace entries of journal positions below
// below that name no exception.
func (p *Pipeline) pruneTrace(below uint64, limit int) (n int, more bool, err error) {
	err = p.db.Update(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTrace)
		var doomed [][]byte
		for part := byte(0); part < tracePartitions && !more; part++ {
			c := tb.Cursor()
			for k, v := c.Seek([]byte{part}); k != nil && k[0] == part; k, v = c.Next() {
				if len(k) != 9 || binary.BigEndian.Uint64(k[1:]) >= below {
					break
				}
				if len(doomed) == limit {
					more = true
					break
				}
				if leadsToException(v) {
					continue
				}
				doomed = append(doomed, bytes.Clone(k))
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
	return n, more, err
}

// leadsToException reports whether a trace value names an exception ("x:"
// ref): those stay, so an open exception keeps its trace.
func leadsToException(v []byte) bool {
	_, refs, _ := bytes.Cut(v, []byte{0})
	return bytes.HasPrefix(refs, []byte("x:")) || bytes.Contains(refs, []byte(",x:"))
}
