package pipeline

import (
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/outbox"
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
	now := clockAt
	j, err := journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(dir, "journal.db"), Retention: journal.Retention{MaxAge: 24 * time.Hour}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	e := &env{t: t, dir: dir, journal: j, clock: &now}
	e.open(testConfig())
	e.p.opts.Retention.Delivered = 30 * 24 * time.Hour

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
	if entries, traces, err := e.p.Prune(); err != nil || entries != 0 || traces != 0 {
		t.Fatalf("prune within retention: %d entries, %d traces, %v", entries, traces, err)
	}

	now = now.Add(31 * 24 * time.Hour)
	if n, err := j.Prune(); err != nil || n != 2 {
		t.Fatalf("journal prune: %d %v", n, err)
	}
	entries, traces, err := e.p.Prune()
	if err != nil || entries != 2 || traces != 1 {
		t.Fatalf("prune: %d entries, %d traces, %v; want 2 and 1", entries, traces, err)
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
	if entries, traces, err := e.p.Prune(); err != nil || entries != 0 || traces != 0 {
		t.Fatalf("second prune: %d entries, %d traces, %v", entries, traces, err)
	}
}
