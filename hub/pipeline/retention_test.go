package pipeline

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/approvals"
	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/internal/boltkv"
	"github.com/plantsync/plantsync/internal/testclock"
)

func traceKeys(t *testing.T, p *Pipeline) int {
	t.Helper()
	n := 0
	err := p.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTrace).ForEach(func(_, _ []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Delivered outbox entries go after storage.outbox_retention; trace entries
// go with their journal records, except those that lead to an exception.
func TestPruneDeliveredEntriesAndTracesOfPrunedEvents(t *testing.T) {
	dir := t.TempDir()
	clock := testclock.New(clockAt)
	j, err := journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(dir, "journal.db"), Retention: journal.Retention{MaxAge: 24 * time.Hour}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	e := &env{t: t, dir: dir, journal: j, clock: clock, retention: Retention{Delivered: 30 * 24 * time.Hour}}
	e.open(testConfig())

	// A completion delivered to erp (a log destination), and a shortage of
	// an unmapped item: an exception, and an alert delivered to alerts.
	e.waitCursor(e.journalEvents(completion("r-1", "PO-1", "P-4711", "1"), shortage("r-2", "P-8000", "5")))
	delivered := func(dest string) bool {
		es := allEntries(t, e.p, dest)
		return len(es) == 1 && es[0].State == outbox.StateDelivered
	}
	waitFor(t, "erp and alerts entries delivered", func() bool { return delivered(DestERP) && delivered("alerts") })
	if n := traceKeys(t, e.p); n != 2 {
		t.Fatalf("%d trace entries, want 2", n)
	}

	// Within retention nothing goes.
	if n, err := e.p.Prune(context.Background()); err != nil || n.any() {
		t.Fatalf("prune within retention: %+v, %v", n, err)
	}

	clock.Add(31 * 24 * time.Hour)
	if n, err := j.Prune(); err != nil || n != 2 {
		t.Fatalf("journal prune: %d %v", n, err)
	}
	if n, err := e.p.Prune(context.Background()); err != nil || n != (Pruned{Entries: 2, Traces: 1}) {
		t.Fatalf("prune: %+v, %v; want 2 entries and 1 trace", n, err)
	}
	if n := len(allEntries(t, e.p, DestERP)) + len(allEntries(t, e.p, "alerts")); n != 0 {
		t.Errorf("%d delivered entries left", n)
	}
	// The open exception keeps its trace; its event is marked pruned.
	tr, err := e.p.Trace("c-r-2")
	if err != nil {
		t.Fatalf("trace of the exception's event: %v", err)
	}
	if len(tr.Exceptions) != 1 || len(tr.Events) != 1 || !tr.Events[0].Pruned || len(tr.Outbox) != 0 {
		t.Fatalf("trace after pruning: %+v", tr)
	}
	var m dto.Metric
	if err := e.p.m.tracePruned.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		got := m.GetCounter().GetValue()
		t.Errorf("trace_pruned_total %v, want 1", got)
	}

	// Work goes on; a later pass finds nothing more.
	last := e.journalEvents(completion("r-3", "PO-2", "P-4711", "1"))
	e.waitCursor(last)
	waitFor(t, "the new erp entry delivered", func() bool { return delivered(DestERP) })
	if es := allEntries(t, e.p, DestERP); es[0].Seq != 2 {
		t.Errorf("the new entry has seq %d, want 2 (sequence numbers are never reused)", es[0].Seq)
	}
	if n, err := e.p.Prune(context.Background()); err != nil || n.any() {
		t.Fatalf("second prune: %+v, %v", n, err)
	}
}

// Trace pruning goes through every partition in chunks and resumes where a
// chunk stopped; entries at or above the journal's first position, and
// those that lead to a stored exception or approval or to a queued action,
// stay. One that leads to an exception or approval retention pruned goes.
func TestPruneTraceInChunksAcrossPartitions(t *testing.T) {
	e := newEnv(t, testConfig())
	type entry struct {
		part byte
		pos  uint64
		refs string
		kept bool
	}
	entries := []entry{
		{0, 1, "o:erp:1", false}, {0, 2, "x:1", true}, {0, 3, "o:erp:2,a:1", true}, {0, 40, "o:erp:3", true},
		{5, 4, "o:erp:4", false}, {5, 5, "o:erp:5,q:erp:k", true}, {5, 6, "o:erp:6", false},
		{63, 7, "o:erp:7", false}, {63, 8, "o:planning:8,o:erp:9", false}, {63, 50, "o:erp:10", true},
		// Exception 7 and approval 4 were never stored (pruned).
		{7, 9, "x:7", false}, {7, 3, "o:erp:11,a:4", false},
	}
	key := func(en entry) []byte {
		k := make([]byte, 9)
		k[0] = en.part
		binary.BigEndian.PutUint64(k[1:], en.pos)
		return k
	}
	err := e.p.db.Update(func(tx *bolt.Tx) error {
		if err := e.p.exceptions.AddTx(tx, &exceptions.Exception{Kind: "validation", CreatedAt: clockAt}); err != nil {
			return err
		}
		if _, err := e.p.approvals.HoldTx(tx, outbox.Entry{Destination: DestPlanning, Action: "schedule.update", OrderingKey: "k"}, "r", "big", clockAt); err != nil {
			return err
		}
		for _, en := range entries {
			if err := tx.Bucket(bucketTrace).Put(key(en), traceValue("c", en.refs)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var from []byte
	total, chunks := 0, 0
	for more := true; more; chunks++ {
		var n int
		n, from, more, err = e.p.pruneTrace(from, 10, 2)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	// 10 entries below position 10, looked at 2 at a time.
	if total != 7 || chunks != 5 {
		t.Errorf("pruned %d in %d chunks, want 7 in 5", total, chunks)
	}
	err = e.p.db.View(func(tx *bolt.Tx) error {
		for _, en := range entries {
			if got := tx.Bucket(bucketTrace).Get(key(en)) != nil; got != en.kept {
				t.Errorf("trace entry %d/%d (%s) kept = %v, want %v", en.part, en.pos, en.refs, got, en.kept)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Pruning stops between transactions once its context ends, and the
// pruning goroutine ends with the pipeline.
func TestPruneStopsWhenCancelled(t *testing.T) {
	e := newEnv(t, testConfig())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.p.Prune(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("prune with an ended context: %v, want context.Canceled", err)
	}
	e.stop()
	e.retention = Retention{Delivered: time.Hour, Interval: time.Millisecond}
	e.open(testConfig())
	e.waitCursor(e.journalEvents(completion("r-1", "PO-1", "P-4711", "1")))
	e.clock.Add(2 * time.Hour)
	waitFor(t, "the delivered entry pruned by the pruning goroutine", func() bool {
		var m dto.Metric
		_ = e.p.m.outboxPruned.WithLabelValues(DestERP).Write(&m)
		return m.GetCounter().GetValue() == 1
	})
	start := time.Now()
	e.stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("shutdown took %s with pruning running", d)
	}
}

// Resolved exceptions, decided approvals and acknowledged alerts go once
// storage.resolved_retention has passed since the decision; open ones stay
// whatever their age, and a scan stops at the first one made after the
// cutoff.
func TestPruneResolvedAfterRetention(t *testing.T) {
	e := newEnv(t, testConfig())
	e.stop()
	e.retention = Retention{Resolved: 90 * 24 * time.Hour}
	e.open(testConfig())

	// Two shortages of an unmapped item: two exceptions, two alerts.
	e.waitCursor(e.journalEvents(shortage("r-1", "P-8000", "5"), shortage("r-2", "P-8000", "6")))
	waitFor(t, "two alerts raised", func() bool { return e.p.alerts.OpenCount() == 2 })
	// Holds: A and B alone; C twice on one ordering key, the second
	// approved while the first is pending (it waits, not released).
	var held [4]uint64
	err := e.p.db.Update(func(tx *bolt.Tx) error {
		for i, okey := range []string{"order:A", "order:B", "order:C", "order:C"} {
			a, err := e.p.approvals.HoldTx(tx, outbox.Entry{Destination: DestPlanning, Action: "schedule.update", OrderingKey: okey,
				IdempotencyKey: "ik-" + okey, CreatedAt: e.clock.Now()}, "big change", "over threshold", e.clock.Now())
			if err != nil {
				return err
			}
			held[i] = a.ID
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A delivery that failed: its entry is parked as a delivery exception.
	var failedSeq uint64
	err = e.p.db.Update(func(tx *bolt.Tx) error {
		v, err := outbox.Encode(&outbox.Entry{Destination: DestERP, Action: "production_order.confirm", IdempotencyKey: "ik-failed",
			OrderingKey: "order:F", CreatedAt: e.clock.Now(), Document: []byte(`{}`)})
		if err != nil {
			return err
		}
		if failedSeq, err = e.p.outbox.AppendTx(tx, DestERP, v); err != nil {
			return err
		}
		return e.p.outbox.CompleteTx(tx, DestERP, []outbox.Outcome{{Seq: failedSeq, State: outbox.StateFailed, Message: "refused", At: e.clock.Now()}}, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	// A record nobody can read: kept, and pruning goes on past it.
	err = e.p.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("exceptions")).Put(boltkv.U64(999), []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
	open, err := e.p.exceptions.List(exceptions.Filter{})
	if err != nil || len(open) != 3 || open[0].Kind != exceptions.KindDelivery {
		t.Fatalf("open exceptions: %d, %v; want 3, the delivery one newest", len(open), err)
	}
	deliveryExc := open[0].ID
	open = open[1:]
	alerts, err := e.p.alerts.List("", 0, 10)
	if err != nil || len(alerts) != 2 {
		t.Fatalf("alerts: %d, %v; want 2", len(alerts), err)
	}
	// Decide one of each; the others stay open.
	resolvedExc, keptExc := open[1].ID, open[0].ID
	ackedAlert, keptAlert := alerts[1].ID, alerts[0].ID
	if _, err := e.p.Discard(resolvedExc, "op", "known item, mapping follows"); err != nil {
		t.Fatal(err)
	}
	if err := e.p.AckAlert(ackedAlert, "op", "seen"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.p.Decide(held[0], "reject", "planner", "no"); err != nil {
		t.Fatal(err)
	}
	if a, _, err := e.p.Decide(held[3], "approve", "planner", "ok"); err != nil || a.Released {
		t.Fatalf("approval behind a pending one: %+v, %v; want approved, not released", a, err)
	}
	if _, err := e.p.Discard(deliveryExc, "op", "sent by hand"); err != nil {
		t.Fatal(err)
	}

	e.clock.Add(89 * 24 * time.Hour)
	if n, err := e.p.Prune(context.Background()); err != nil || n.any() {
		t.Fatalf("prune within retention: %+v, %v", n, err)
	}
	e.clock.Add(2 * 24 * time.Hour)
	n, err := e.p.Prune(context.Background())
	// The delivery exception's trace (of no journaled event: position 0)
	// goes with it.
	if err != nil || n != (Pruned{Exceptions: 2, Approvals: 1, Alerts: 1, Traces: 1}) {
		t.Fatalf("prune after retention: %+v, %v; want two exceptions, one approval, one alert and one trace", n, err)
	}
	if _, err := e.p.outbox.Get(DestERP, failedSeq); !errors.Is(err, outbox.ErrNotFound) {
		t.Errorf("the failed entry of the pruned delivery exception: %v, want gone", err)
	}
	if a, _, err := e.p.approvals.Get(held[3]); err != nil || a.State != approvals.StateApproved || a.Released {
		t.Errorf("approved approval waiting behind a pending one: %+v, %v; want kept", a, err)
	}
	err = e.p.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte("exceptions")).Get(boltkv.U64(999)) == nil {
			t.Error("the unreadable exception record was deleted")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.exceptions.Get(resolvedExc); !errors.Is(err, exceptions.ErrNotFound) {
		t.Errorf("resolved exception after pruning: %v, want not found", err)
	}
	if _, err := e.p.exceptions.Get(keptExc); err != nil {
		t.Errorf("open exception pruned: %v", err)
	}
	// The pruned exception's event still has its trace; it lists what is
	// left.
	if tr, err := e.p.Trace("c-r-1"); err != nil || len(tr.Exceptions) != 0 || len(tr.Events) != 1 {
		t.Errorf("trace of the pruned exception's event: %+v, %v; want the event and no exception", tr, err)
	}
	if tr, err := e.p.Trace("c-r-2"); err != nil || len(tr.Exceptions) != 1 || tr.Exceptions[0].ID != keptExc {
		t.Errorf("trace of the open exception's event: %+v, %v", tr, err)
	}
	if _, _, err := e.p.approvals.Get(held[0]); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("decided approval after pruning: %v, want not found", err)
	}
	if a, _, err := e.p.approvals.Get(held[1]); err != nil || a.State != approvals.StatePending {
		t.Errorf("pending approval after pruning: %+v, %v", a, err)
	}
	if left, err := e.p.alerts.List("", 0, 10); err != nil || len(left) != 1 || left[0].ID != keptAlert {
		t.Errorf("alerts after pruning: %+v, %v; want only %d", left, err, keptAlert)
	}
	if e.p.exceptions.OpenCount() != 1 || e.p.alerts.OpenCount() != 1 || e.p.approvals.PendingCount() != 2 {
		t.Errorf("open counts after pruning: exceptions %d, alerts %d, approvals %d; want 1, 1, 2",
			e.p.exceptions.OpenCount(), e.p.alerts.OpenCount(), e.p.approvals.PendingCount())
	}
	var m dto.Metric
	if err := e.p.m.resolvedPruned.WithLabelValues("exception").Write(&m); err != nil || m.GetCounter().GetValue() != 2 {
		t.Errorf("resolved_pruned_total{kind=exception} %v, want 2", m.GetCounter().GetValue())
	}
	if n, err := e.p.Prune(context.Background()); err != nil || n.any() {
		t.Fatalf("second prune: %+v, %v", n, err)
	}
}
