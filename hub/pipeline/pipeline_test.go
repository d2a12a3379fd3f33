package pipeline

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/internal/testclock"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func shortage(id, item, qty string) *pb.Event {
	at := timestamppb.New(clockAt.Add(-time.Hour))
	return &pb.Event{Id: id, Plant: "DE-01", Type: "material.shortage", OccurredAt: at, CorrelationId: "c-" + id, SchemaVersion: 1,
		Payload: &pb.Event_MaterialShortage{MaterialShortage: &pb.MaterialShortage{Item: item, Quantity: &pb.Quantity{Value: qty, Unit: "KG"}}}}
}

func completion(id, order, item, qty string) *pb.Event {
	at := timestamppb.New(clockAt.Add(-time.Hour))
	return &pb.Event{Id: id, Plant: "DE-01", Type: "production.completion", OccurredAt: at, SchemaVersion: 1,
		Payload: &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{Order: order, Item: item, Good: &pb.Quantity{Value: qty, Unit: "EA"}}}}
}

// allEntries reads every outbox entry of dest.
func allEntries(t testing.TB, p *Pipeline, dest string) []outbox.Entry {
	t.Helper()
	var out []outbox.Entry
	var after uint64
	for {
		page, err := p.Outbox().List(outbox.Query{Destination: dest, Ascending: true, After: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return out
		}
		out = append(out, page...)
		after = page[len(page)-1].Seq
	}
}

// The cursor and the outbox move together: stopping and reopening the
// pipeline at arbitrary points (between any two commits) never skips or
// doubles an entry.
func TestRestartsNeverSkipOrDouble(t *testing.T) {
	cfg := testConfig()
	cfg.BatchSize = 7
	e := newEnv(t, cfg)
	const n = 1200
	var evs []*pb.Event
	for i := range n {
		evs = append(evs, completion(fmt.Sprintf("ev-%04d", i), fmt.Sprintf("PO-%d", i%7), "P-4711", "1"))
	}
	// Stop the pipeline first so every restart below lands mid-stream.
	e.stop()
	last := e.journalEvents(evs...)
	midway := 0
	for k := uint64(1); k <= 5; k++ {
		e.open(cfg)
		waitFor(t, "cursor threshold", func() bool { return e.p.Status().Cursor >= k*last/6 })
		e.stop()
		if c := e.p.Status().Cursor; c > 0 && c < last {
			midway++
		}
	}
	if midway < 3 {
		t.Fatalf("only %d restarts happened mid-stream", midway)
	}
	e.open(cfg)
	e.waitCursor(last)
	entries := allEntries(t, e.p, DestERP)
	seen := map[string]int{}
	for _, en := range entries {
		seen[en.IdempotencyKey]++
		if en.Lineage.JournalPosition == 0 || en.Action != ActionProductionOrderConfirm {
			t.Fatalf("entry %+v", en)
		}
	}
	if len(entries) != n || len(seen) != n {
		t.Fatalf("%d entries with %d distinct keys for %d events", len(entries), len(seen), n)
	}
	// Per ordering key, outbox order is journal order.
	lastPos := map[string]uint64{}
	for _, en := range entries {
		if en.Lineage.JournalPosition <= lastPos[en.OrderingKey] {
			t.Fatalf("ordering key %s out of journal order", en.OrderingKey)
		}
		lastPos[en.OrderingKey] = en.Lineage.JournalPosition
	}
	// The built-in log destination delivers them.
	waitFor(t, "log destination drained", func() bool { return e.p.Outbox().Depth(DestERP) == 0 })
}

func TestOperationalReportsBecomeExceptionsAndAlerts(t *testing.T) {
	e := newEnv(t, testConfig())
	at := timestamppb.New(clockAt)
	ov := &pb.Event{Id: "ov-1", Plant: "DE-01", Type: "buffer.overflow", OccurredAt: at,
		Payload: &pb.Event_BufferOverflow{BufferOverflow: &pb.BufferOverflow{Dropped: []*pb.SequenceRange{{First: 5, Last: 9}}, Policy: "drop_oldest"}}}
	// A malformed report (no plant) still reaches exceptions and alerts.
	se := &pb.Event{Id: "se-1", Type: "source.error", OccurredAt: at, Source: &pb.Source{Name: "mes"},
		Payload: &pb.Event_SourceError{SourceError: &pb.SourceError{Reason: "invalid JSON at byte offset 3", Location: "topic mes/x"}}}
	e.waitCursor(e.journalEvents(ov, se))
	excs, err := e.p.Exceptions().List(exceptions.Filter{})
	if err != nil || len(excs) != 2 {
		t.Fatalf("exceptions %v %v", excs, err)
	}
	kinds := excs[0].Kind + "," + excs[1].Kind
	if kinds != "source_error,buffer_overflow" || !strings.Contains(excs[0].Reason, "plant: missing") || !strings.Contains(excs[1].Reason, "5 events dropped") {
		t.Fatalf("exceptions: %s / %s / %s", kinds, excs[0].Reason, excs[1].Reason)
	}
	waitFor(t, "two alerts", func() bool { return e.p.Alerts().OpenCount() == 2 })
	al, _ := e.p.Alerts().List("open", 0, 10)
	if al[1].Severity != "critical" || !strings.Contains(al[1].Title, "5 events dropped") {
		t.Fatalf("alert %+v", al[1])
	}
	if err := e.p.AckAlert(al[0].ID, "ops", "looked"); err != nil {
		t.Fatal(err)
	}
	if err := e.p.AckAlert(al[0].ID, "ops", "again"); err == nil {
		t.Fatal("acknowledged twice")
	}
	// Replaying an operational report acknowledges it; no second alert.
	res, err := e.p.Replay([]uint64{excs[1].ID}, "ops")
	if err != nil || res[0].Outcome != ReplayResolved {
		t.Fatalf("replay %+v %v", res, err)
	}
	if n := len(allEntries(t, e.p, "alerts")); n != 2 {
		t.Fatalf("%d alert entries after replay", n)
	}
}

// A delivery that failed for good becomes an exception; replay requeues
// the same entry (same idempotency key) exactly once.
func TestDeliveryFailureReplay(t *testing.T) {
	cfg := testConfig()
	e := newEnv(t, cfg)
	// Stop the built-in delivery so the test plays the delivery engine.
	e.stop()
	p, err := New(Options{Config: cfg, Dir: e.dir, Journal: e.journal, Destinations: testDests(), Now: func() time.Time { return clockAt }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	last := e.journalEvents(completion("d-1", "PO-1", "P-4711", "2"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.run(ctx)
	waitFor(t, "cursor", func() bool { return p.Status().Cursor >= last })
	pend, err := p.Outbox().Pending(DestERP, 0, 10)
	if err != nil || len(pend) != 1 {
		t.Fatalf("pending %v %v", pend, err)
	}
	if err := p.Outbox().Complete(DestERP, []outbox.Outcome{{Seq: pend[0].Seq, State: outbox.StateFailed, Message: "ERP says: unknown product 100471", Attempts: 5}}); err != nil {
		t.Fatal(err)
	}
	excs, _ := p.Exceptions().List(exceptions.Filter{Kind: exceptions.KindDelivery})
	if len(excs) != 1 || !strings.Contains(excs[0].Reason, "unknown product 100471") || excs[0].Delivery.IdempotencyKey != pend[0].IdempotencyKey {
		t.Fatalf("delivery exception %+v", excs)
	}
	for i := range 3 {
		res, err := p.Replay([]uint64{excs[0].ID}, "admin")
		want := ReplayResolved
		if i > 0 {
			want = ReplayAlreadyResolved
		}
		if err != nil || res[0].Outcome != want {
			t.Fatalf("replay %d: %+v %v", i, res, err)
		}
	}
	pend, _ = p.Outbox().Pending(DestERP, 0, 10)
	if len(pend) != 1 || p.Outbox().Depth(DestERP) != 1 {
		t.Fatalf("after replay: %d pending, depth %d", len(pend), p.Outbox().Depth(DestERP))
	}
	cancel()
}

// Events pruned from the journal before the pipeline reached them are an
// exception, never a silent gap.
func TestJournalGapIsAnException(t *testing.T) {
	dir := t.TempDir()
	clock := testclock.New(clockAt)
	j, err := journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(dir, "journal.db"), Retention: journal.Retention{MaxAge: time.Hour}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	e := &env{t: t, dir: dir, journal: j, clock: clock}
	e.journalEvents(completion("g-1", "PO-1", "P-4711", "1"), completion("g-2", "PO-1", "P-4711", "1"))
	clock.Add(2 * time.Hour)
	if n, err := j.Prune(); err != nil || n != 2 {
		t.Fatalf("prune: %d %v", n, err)
	}
	last := e.journalEvents(completion("g-3", "PO-1", "P-4711", "1"))
	e.open(testConfig())
	e.waitCursor(last)
	excs, _ := e.p.Exceptions().List(exceptions.Filter{Kind: exceptions.KindJournalGap})
	if len(excs) != 1 || !strings.Contains(excs[0].Reason, "journal positions 1 to 2 were pruned") {
		t.Fatalf("gap exceptions: %+v", excs)
	}
	if n := len(allEntries(t, e.p, DestERP)); n != 1 {
		t.Fatalf("%d entries", n)
	}
}

func TestTraceShowsTheWholePath(t *testing.T) {
	e := newEnv(t, testConfig())
	ev := shortage("t-1", "P-8000", "5") // maps inbound, not for erp
	e.waitCursor(e.journalEvents(ev))
	tr, err := e.p.Trace("c-t-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Events) != 1 || tr.Events[0].Pruned || !strings.Contains(string(tr.Events[0].Event), `"P-8000"`) {
		t.Fatalf("events %+v", tr.Events)
	}
	if len(tr.Exceptions) != 1 || tr.Exceptions[0].Kind != "unmapped_item" || tr.Exceptions[0].Lineage.Crosswalks["item"] != 1 {
		t.Fatalf("exceptions %+v", tr.Exceptions)
	}
	if len(tr.Outbox) != 1 || tr.Outbox[0].Action != ActionAlertRaise || tr.Outbox[0].Lineage.Rule != "material.shortage/alert.raise@alerts" {
		t.Fatalf("outbox %+v", tr.Outbox)
	}
	waitFor(t, "alert delivered", func() bool {
		tr, _ = e.p.Trace("c-t-1")
		return len(tr.Alerts) == 1
	})
	if _, err := e.p.Trace("nope"); !errors.Is(err, ErrTraceNotFound) {
		t.Fatalf("unknown trace: %v", err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"bad CEL", func(c *Config) { c.Rules[0].Expr = "decimal(event.production_completion.good) > 0" },
			"pipeline.rules[0].expr: rule does not compile: rule completion-reports-quantity: ERROR: <input>:1:43: found no matching overload for '_>_' applied to '(decimal, int)'"},
		{"not bool", func(c *Config) { c.Rules[1].Expr = `event.plant` }, "pipeline.rules[1].expr: rule does not compile: rule shortage-quantity-positive: yields string; want bool"},
		{"hold CEL", func(c *Config) { c.Workflows[3].Actions[0].Hold[0].When = "event.schedule_change.new_start > 3" },
			"pipeline.workflows[3].actions[0].hold[0].when: rule does not compile: rule large-date-shift"},
		{"unknown action", func(c *Config) { c.Workflows[0].Actions[0].Action = "purchase_requisition.make" }, `pipeline.workflows[0].actions[0].action: "purchase_requisition.make" is not an action; want one of`},
		{"wrong event", func(c *Config) { c.Workflows[1].Actions[0].Action = ActionPurchaseRequisitionCreate },
			"pipeline.workflows[1].actions[0].action: purchase_requisition.create cannot be built from production.completion events; it takes material.shortage"},
		{"undeclared destination", func(c *Config) { c.Workflows[0].Actions[0].Destination = "sap" }, `pipeline.workflows[0].actions[0].destination: "sap" is not declared`},
		{"alerts cannot", func(c *Config) { c.Workflows[0].Actions[0].Destination = DestAlerts },
			"pipeline.workflows[0].actions[0].destination: alerts (type alerts) does not perform purchase_requisition.create; it performs alert.raise"},
		{"unknown event", func(c *Config) { c.Workflows[0].Event = "material.shortfall" }, `pipeline.workflows[0].event: "material.shortfall" is not an event type`},
		{"twice", func(c *Config) { c.Workflows = append(c.Workflows, Workflow{Event: "material.shortage"}) }, "already has a workflow"},
		{"bad ordering key", func(c *Config) { c.Workflows[0].Actions[0].OrderingKey = "event.plant == 1" }, "pipeline.workflows[0].actions[0].ordering_key: rule does not compile"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := NewDefaultConfig()
			c.mutate(&cfg)
			errs := cfg.Validate("pipeline", testDests())
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), c.want) {
				t.Fatalf("errors %v; want one with %q", errs, c.want)
			}
		})
	}
	cfg := testConfig()
	cfg.Crosswalks.Inbound["item"] = filepath.Join("testdata", "bad-item.csv")
	cfg.Crosswalks.Inbound["colour"] = "x.csv"
	errs := cfg.CheckFiles("pipeline", testDests())
	if len(errs) != 2 || !strings.Contains(errs[1].Error(), "pipeline.crosswalks.inbound.item: crosswalk csv: testdata/bad-item.csv line 4: column item: empty") ||
		!strings.Contains(errs[0].Error(), "pipeline.crosswalks.inbound.colour: no table colour") {
		t.Fatalf("file errors: %v", errs)
	}
}

// The canonical mapper never panics on any event, and what it maps comes
// from the crosswalks (or is reported unmapped).
func FuzzCanonicalize(f *testing.F) {
	set, p := testSet(f)
	files, _ := filepath.Glob("testdata/golden/*.event.json")
	for _, fn := range files {
		ev := loadEvent(f, fn)
		raw, _ := proto.Marshal(ev)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		// The whole pipeline step is total: it yields outputs or an
		// exception, never a panic.
		res := p.process(journal.Record{Position: 1, EventID: "fz", Event: raw}, set, clockAt, 0)
		if res.exc == nil && len(res.outputs) == 0 {
			var ev pb.Event
			if proto.Unmarshal(raw, &ev) == nil {
				if _, ok := p.workflows[ev.GetType()]; ok && ev.GetType() != "quality.hold" {
					t.Fatalf("%s event yielded nothing", ev.GetType())
				}
			}
		}
		var ev pb.Event
		if proto.Unmarshal(raw, &ev) != nil {
			return
		}
		typ, err := p.schemas.Validate(&ev)
		if err != nil || typ == nil {
			return
		}
		before := ev.GetPlant()
		err = Canonicalize(&ev, typ, p.schemas, set, clockAt, map[string]uint64{})
		plants, _ := set.Table("plant")
		if v, ok := plants.Lookup(clockAt, before); ok && ev.GetPlant() != v[0] {
			t.Fatalf("plant %q mapped to %q, want %q", before, ev.GetPlant(), v[0])
		} else if !ok && (err == nil || !strings.Contains(err.Error(), "unmapped plant")) {
			t.Fatalf("plant %q not in the table but no error: %v", before, err)
		}
	})
}
