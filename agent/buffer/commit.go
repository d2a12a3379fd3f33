package buffer

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/internal/boltkv"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// overflowEventType is the canonical type of drop reports.
const overflowEventType = "buffer.overflow"

// commitLoop is the only writer. It gathers appends and acks into groups and
// commits each group in one transaction (one fsync).
func (b *Buffer) commitLoop() {
	defer close(b.finished)
	var (
		pending []*request
		ackTo   uint64
		retry   = 100 * time.Millisecond
	)
	ackTo = b.Stats().AckedThrough
	for {
		st := b.Stats()
		idle := len(pending) == 0 && ackTo <= st.AckedThrough
		waiting := st.Blocked || st.Degraded != ""
		switch {
		case idle:
			select {
			case r := <-b.reqs:
				pending = append(pending, r)
			case a := <-b.acks:
				ackTo = max(ackTo, a)
			case <-b.stop:
				b.finish(pending, ackTo)
				return
			}
		case waiting:
			// Blocked on space or retrying a failed commit: take no new
			// appends (the queue fills and senders feel back-pressure).
			t := time.NewTimer(retry)
			select {
			case a := <-b.acks:
				ackTo = max(ackTo, a)
			case <-t.C:
			case <-b.stop:
				t.Stop()
				b.finish(pending, ackTo)
				return
			}
			t.Stop()
		}
		if !waiting {
			pending, ackTo = b.gather(pending, ackTo)
		}
		n, err := b.commitGroup(pending, ackTo)
		if err != nil {
			b.setDegraded(err)
			retry = min(retry*2, 5*time.Second)
			continue
		}
		retry = 100 * time.Millisecond
		pending = pending[n:]
		b.setBlocked(len(pending) > 0)
	}
}

// gather collects more work for up to CommitInterval or CommitMaxEvents.
func (b *Buffer) gather(pending []*request, ackTo uint64) ([]*request, uint64) {
	count := 0
	for _, r := range pending {
		count += len(r.encoded)
	}
	var deadline <-chan time.Time
	if b.cfg.CommitInterval > 0 && len(pending) > 0 {
		t := time.NewTimer(b.cfg.CommitInterval)
		defer t.Stop()
		deadline = t.C
	}
	for count < b.cfg.CommitMaxEvents {
		if deadline == nil {
			select {
			case r := <-b.reqs:
				pending = append(pending, r)
				count += len(r.encoded)
			case a := <-b.acks:
				ackTo = max(ackTo, a)
			default:
				return pending, ackTo
			}
			continue
		}
		select {
		case r := <-b.reqs:
			pending = append(pending, r)
			count += len(r.encoded)
		case a := <-b.acks:
			ackTo = max(ackTo, a)
		case <-deadline:
			return pending, ackTo
		case <-b.stop:
			return pending, ackTo
		}
	}
	return pending, ackTo
}

// finish flushes on Close: everything already queued is committed if it
// fits; the rest fails with ErrClosed so its source does not acknowledge it.
func (b *Buffer) finish(pending []*request, ackTo uint64) {
	for {
		select {
		case r := <-b.reqs:
			pending = append(pending, r)
			continue
		default:
		}
		break
	}
	n, err := b.commitGroup(pending, ackTo)
	if err != nil {
		b.log.Error("final buffer commit failed; the sources were not acknowledged and will redeliver", "error", err)
		n = 0
	}
	for _, r := range pending[n:] {
		r.done(0, 0, ErrClosed)
	}
}

// commitGroup applies acks and commits the longest prefix of pending that
// fits (dropping the oldest unsent events first under drop_oldest). It
// returns how many requests it completed, including ones failed for good.
func (b *Buffer) commitGroup(pending []*request, ackTo uint64) (n int, err error) {
	if len(pending) == 0 && ackTo <= b.Stats().AckedThrough {
		return 0, nil
	}
	if b.cfg.Overflow == OverflowDropOldest {
		// Dropping reads the sent mark; hold off ReadForSend meanwhile.
		b.readMu.Lock()
		defer b.readMu.Unlock()
	}
	start := time.Now()
	type outcome struct {
		first, last uint64
		err         error
	}
	results := make([]outcome, 0, len(pending))
	var st Stats
	var added int
	err = b.update(func(tx *bolt.Tx) error {
		results = results[:0]
		added = 0
		meta, events := tx.Bucket(bucketMeta), tx.Bucket(bucketEvents)
		// Sequences only grow: full pages never take a later insert, so
		// filling them halves the pages written (and the file size).
		events.FillPercent = 1.0
		st = b.Stats()
		next := boltkv.GetU64(meta, keyNextSeq)

		if ackTo > st.AckedThrough {
			if err := deleteThrough(events, &st, st.AckedThrough+1, ackTo); err != nil {
				return err
			}
			st.AckedThrough = ackTo
		}

		var dropped []*pb.SequenceRange
		for _, r := range pending {
			if r.size > b.cfg.MaxBytes {
				results = append(results, outcome{err: fmt.Errorf("%w: %d bytes, max_bytes is %d", ErrTooLarge, r.size, b.cfg.MaxBytes)})
				continue
			}
			if st.Bytes+r.size > b.cfg.MaxBytes {
				if b.cfg.Overflow != OverflowDropOldest {
					break
				}
				from := max(b.sentThrough.Load(), st.AckedThrough) + 1
				ranges, err := dropOldest(events, &st, from, st.Bytes+r.size-b.cfg.MaxBytes)
				if err != nil {
					return err
				}
				dropped = append(dropped, ranges...)
				if st.Bytes+r.size > b.cfg.MaxBytes {
					break // what is left is in flight to the hub; wait for its ack
				}
			}
			if err := writeState(tx, r.state); err != nil {
				return err
			}
			first := next
			for _, raw := range r.encoded {
				if err := putEncoded(events, &st, next, raw); err != nil {
					return err
				}
				next++
			}
			added += len(r.encoded)
			if len(r.encoded) == 0 {
				results = append(results, outcome{})
			} else {
				results = append(results, outcome{first: first, last: next - 1})
			}
		}
		if len(dropped) > 0 {
			raw, err := encodeEvent(b.overflowEvent(dropped))
			if err != nil {
				return err
			}
			if err := putEncoded(events, &st, next, raw); err != nil {
				return err
			}
			next++
			added++
		}
		st.LastSeq = next - 1
		if err := boltkv.PutU64(meta, keyNextSeq, next); err != nil {
			return err
		}
		if err := boltkv.PutU64(meta, keyAckedThrough, st.AckedThrough); err != nil {
			return err
		}
		if err := boltkv.PutU64(meta, keyBytes, uint64(st.Bytes)); err != nil {
			return err
		}
		if err := boltkv.PutU64(meta, keyCount, st.Events); err != nil {
			return err
		}
		return boltkv.PutU64(meta, keyDroppedTotal, st.DroppedTotal)
	})
	if err != nil {
		return 0, err
	}
	if b.opts.ObserveCommit != nil {
		b.opts.ObserveCommit(time.Since(start), added)
	}
	b.mu.Lock()
	prevDropped := b.stats.DroppedTotal
	st.Blocked, st.Degraded = b.stats.Blocked, ""
	if b.stats.Degraded != "" {
		b.log.Info("buffer writable again")
	}
	b.stats = st
	if added > 0 {
		close(b.notify)
		b.notify = make(chan struct{})
	}
	b.mu.Unlock()
	if st.DroppedTotal > prevDropped {
		b.log.Warn("buffer full: dropped oldest unsent events (reported to the hub as buffer.overflow)",
			"dropped", st.DroppedTotal-prevDropped, "dropped_total", st.DroppedTotal)
	}
	for i, r := range pending[:len(results)] {
		r.done(results[i].first, results[i].last, results[i].err)
	}
	return len(results), nil
}

// update runs fn in a write transaction, turning a bbolt panic on a damaged
// page into an error instead of a crash.
func (b *Buffer) update(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return b.db.Update(fn)
}

// sequenceFieldMax is the most bytes the sequence field can take: one tag
// byte and a varint of up to 10 bytes.
const sequenceFieldMax = 11

// encodeEvent marshals ev without a sequence into a slice with room for
// appendSequence.
func encodeEvent(ev *pb.Event) ([]byte, error) {
	ev.Sequence = 0
	n := proto.Size(ev)
	raw, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(make([]byte, 0, n+sequenceFieldMax), ev)
	if err != nil {
		return nil, fmt.Errorf("%w: %s (%s): %v", ErrInvalidEvent, ev.GetId(), ev.GetType(), err)
	}
	return raw, nil
}

// appendSequence adds the sequence field to an encoded event. Protobuf
// decoders read a field that follows the others the same as one in place,
// so the stored bytes decode to the event with its sequence. It writes into
// raw's spare capacity, so a retried commit rewrites the same bytes.
func appendSequence(raw []byte, seq uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(raw, 2, protowire.VarintType), seq)
}

func putEncoded(events *bolt.Bucket, st *Stats, seq uint64, raw []byte) error {
	k, v := boltkv.U64(seq), appendSequence(raw, seq)
	if err := events.Put(k, v); err != nil {
		return err
	}
	st.Bytes += int64(len(k) + len(v))
	st.Events++
	return nil
}

func deleteThrough(events *bolt.Bucket, st *Stats, from, through uint64) error {
	// Cursor.Delete keeps the cursor in place, so Next continues with the
	// following key without a new seek per deleted event.
	c := events.Cursor()
	for k, v := c.Seek(boltkv.U64(from)); k != nil && boltkv.ToU64(k) <= through; k, v = c.Next() {
		size := int64(len(k) + len(v))
		if err := c.Delete(); err != nil {
			return err
		}
		st.Bytes -= size
		st.Events--
	}
	return nil
}

// dropOldest deletes stored events from sequence `from` on until need bytes
// are free, returning the dropped ranges. A dropped buffer.overflow event's
// own ranges are carried over, so no report of loss is itself lost.
func dropOldest(events *bolt.Bucket, st *Stats, from uint64, need int64) ([]*pb.SequenceRange, error) {
	var ranges []*pb.SequenceRange
	var cur *pb.SequenceRange
	var freed int64
	c := events.Cursor()
	for k, v := c.Seek(boltkv.U64(from)); k != nil && freed < need; k, v = c.Seek(boltkv.U64(from)) {
		seq := boltkv.ToU64(k)
		var ev pb.Event
		if err := proto.Unmarshal(v, &ev); err == nil && ev.GetType() == overflowEventType {
			ranges = append(ranges, ev.GetBufferOverflow().GetDropped()...)
		}
		size := int64(len(k) + len(v))
		if err := events.Delete(k); err != nil {
			return nil, err
		}
		freed += size
		st.Bytes -= size
		st.Events--
		// Counted here, once per deleted event: the carried ranges of a
		// dropped report were counted when they were dropped.
		st.DroppedTotal++
		from = seq + 1
		if cur != nil && cur.Last+1 == seq {
			cur.Last = seq
		} else {
			cur = &pb.SequenceRange{First: seq, Last: seq}
			ranges = append(ranges, cur)
		}
	}
	return ranges, nil
}

func (b *Buffer) overflowEvent(dropped []*pb.SequenceRange) *pb.Event {
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	now := timestamppb.Now()
	ev := &pb.Event{
		Id:            id.String(),
		Type:          overflowEventType,
		OccurredAt:    now,
		ObservedAt:    now,
		SchemaVersion: 1,
		Source:        &pb.Source{Name: "buffer", Kind: "agent", Uri: "buffer://" + b.path},
		Payload: &pb.Event_BufferOverflow{BufferOverflow: &pb.BufferOverflow{
			Dropped: dropped,
			Policy:  OverflowDropOldest,
		}},
	}
	if b.opts.Decorate != nil {
		b.opts.Decorate(ev)
	}
	return ev
}

func (b *Buffer) setDegraded(err error) {
	b.mu.Lock()
	was := b.stats.Degraded
	b.stats.Degraded = err.Error()
	b.mu.Unlock()
	if was == "" {
		b.log.Error("buffer commit failed; holding appends and retrying (sources are not acknowledged meanwhile)", "error", err)
	}
	if errors.Is(err, ErrCorrupt) {
		b.log.Error("buffer file damaged while running; stop the agent and inspect the file", "path", b.path)
	}
}

func (b *Buffer) setBlocked(blocked bool) {
	b.mu.Lock()
	was := b.stats.Blocked
	b.stats.Blocked = blocked
	b.mu.Unlock()
	if blocked && !was {
		b.log.Warn("buffer full: holding appends until the hub acknowledges (policy block)", "max_bytes", b.cfg.MaxBytes)
	} else if !blocked && was {
		b.log.Info("buffer accepting appends again")
	}
}

func writeState(tx *bolt.Tx, writes []StateWrite) error {
	if len(writes) == 0 {
		return nil
	}
	root, err := tx.CreateBucketIfNotExists(bucketState)
	if err != nil {
		return err
	}
	for _, w := range writes {
		bk, err := root.CreateBucketIfNotExists([]byte(w.Source))
		if err != nil {
			return fmt.Errorf("source state %q: %w", w.Source, err)
		}
		if w.Value == nil {
			err = bk.Delete(w.Key)
		} else {
			err = bk.Put(w.Key, w.Value)
		}
		if err != nil {
			return fmt.Errorf("source state %q: %w", w.Source, err)
		}
	}
	return nil
}
