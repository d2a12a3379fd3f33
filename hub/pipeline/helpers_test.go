package pipeline

import (
	"os"

	"context"
	"google.golang.org/protobuf/encoding/protojson"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/internal/testclock"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir) // never returns: the parent kills it
	}
	goleak.VerifyTestMain(m)
}

// clockAt is the processing time of the tests: crosswalk rows with a later
// effective_from are not in force yet.
var clockAt = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func testDests() []Destination {
	return []Destination{{Name: DestERP, Type: "log"}, {Name: DestSupplierPortal, Type: "log"}, {Name: DestPlanning, Type: "log"}, {Name: DestReporting, Type: "log"}}
}

// testConfig is the shipped pipeline with the crosswalks of testdata.
func testConfig() Config {
	c := NewDefaultConfig()
	cw := func(f string) string { return filepath.Join("testdata", "crosswalks", f+".csv") }
	c.Crosswalks.Inbound = map[string]string{"plant": cw("plant"), "item": cw("item"), "unit": cw("unit"), "supplier": cw("supplier"), "work_center": cw("work_center")}
	c.Crosswalks.Outbound = map[string]map[string]string{
		DestERP:            {"item": cw("erp-item"), "unit": cw("erp-unit"), "warehouse": cw("erp-warehouse"), "supplier": cw("erp-supplier"), "plant": cw("erp-plant")},
		DestSupplierPortal: {"supplier": cw("supplier_portal-supplier")},
		DestPlanning:       {"unit": cw("planning-unit")},
	}
	return c
}

type env struct {
	t       testing.TB
	dir     string
	journal *journal.Bolt
	p       *Pipeline
	clock   *testclock.Clock
	seq     uint64
	// retention is passed to the next open.
	retention Retention
}

// newEnv opens a journal and a pipeline over it in a temp folder.
func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.clock = testclock.New(clockAt)
	j, err := journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(e.dir, "journal.db")})
	if err != nil {
		t.Fatal(err)
	}
	e.journal = j
	t.Cleanup(func() { _ = j.Close() })
	e.open(cfg)
	return e
}

func (e *env) open(cfg Config) {
	e.t.Helper()
	p, err := New(Options{Config: cfg, Dir: e.dir, Journal: e.journal, Destinations: testDests(), Now: e.clock.Now,
		Retention: e.retention})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.p = p
	e.t.Cleanup(func() { e.stop() })
}

func (e *env) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.p.Shutdown(ctx); err != nil {
		e.t.Errorf("pipeline shutdown: %v", err)
	}
}

// journalEvents commits events as one agent batch and returns the last
// position.
func (e *env) journalEvents(evs ...*pb.Event) uint64 {
	e.t.Helper()
	last, _ := e.journalBatch(evs, false)
	return last
}

// journalBatch commits events as one agent batch; with decoded, each goes
// with its decoded form as ingest hands it on (a copy, returned: the
// pipeline changes it).
func (e *env) journalBatch(evs []*pb.Event, decoded bool) (last uint64, handed []*pb.Event) {
	e.t.Helper()
	b := &journal.Batch{Producer: "agent:a1", Epoch: "e1"}
	for _, ev := range evs {
		e.seq++
		raw, err := proto.Marshal(ev)
		if err != nil {
			e.t.Fatal(err)
		}
		in := journal.Incoming{Sequence: e.seq, ID: ev.GetId(), Raw: raw}
		if decoded {
			in.Decoded = proto.Clone(ev).(*pb.Event)
			handed = append(handed, in.Decoded)
		}
		b.Events = append(b.Events, in)
	}
	b.LastSequence = e.seq
	o, err := e.journal.Commit(context.Background(), b)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range o.Results {
		last = max(last, r.Position)
	}
	return last, handed
}

// waitCursor waits until the pipeline committed position pos.
func (e *env) waitCursor(pos uint64) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.p.Status().Cursor < pos {
		if time.Now().After(deadline) {
			e.t.Fatalf("pipeline cursor %d, want %d", e.p.Status().Cursor, pos)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitFor polls cond with a deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func loadEvent(t testing.TB, path string) *pb.Event {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ev pb.Event
	if err := protojson.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &ev
}

func exceptionsAll() exceptions.Filter { return exceptions.Filter{State: "all", Limit: 10} }
