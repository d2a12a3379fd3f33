package capture_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/capture"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeERP is an in-process connector whose changes a test appends; its
// cursor is the index of the next change. ignoreCursor makes it answer
// from the start once, as a connector that lost its place would.
type fakeERP struct {
	sdk.UnimplementedDestination
	mu           sync.Mutex
	changes      []sdk.Change
	calls        int
	ignoreCursor bool
	fail         error
}

func (f *fakeERP) Configure(context.Context, sdk.ConfigureRequest) (sdk.ConfigureResponse, error) {
	return sdk.ConfigureResponse{Capabilities: []sdk.Capability{sdk.CapabilityChanges}}, nil
}

func (f *fakeERP) Deliver(context.Context, sdk.DeliverRequest) (sdk.DeliverResponse, error) {
	return sdk.OK(""), nil
}

func (f *fakeERP) Changes(_ context.Context, req sdk.ChangesRequest) (sdk.ChangesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		return sdk.ChangesResponse{}, f.fail
	}
	from := 0
	if req.Cursor != "" && !f.ignoreCursor {
		n, err := strconv.Atoi(req.Cursor)
		if err != nil {
			return sdk.ChangesResponse{}, fmt.Errorf("cursor %q", req.Cursor)
		}
		from = n
	}
	f.ignoreCursor = false
	to := min(len(f.changes), from+req.Limit)
	return sdk.ChangesResponse{Changes: append([]sdk.Change(nil), f.changes[from:to]...), NextCursor: strconv.Itoa(to), More: to < len(f.changes)}, nil
}

func (f *fakeERP) add(c ...sdk.Change) {
	f.mu.Lock()
	f.changes = append(f.changes, c...)
	f.mu.Unlock()
}

func doc(t *testing.T, d capture.Document) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func approved(t *testing.T, n int) sdk.Change {
	return sdk.Change{ID: fmt.Sprintf("purchase.purchase,%d:approved", n), Kind: capture.KindPOApproved, ExternalRef: fmt.Sprintf("purchase.purchase,%d", n),
		ChangedAt: time.Date(2026, 11, 27, 10, 0, n, 0, time.UTC),
		Document: doc(t, capture.Document{Document: fmt.Sprintf("purchase.purchase,%d", n), Number: fmt.Sprintf("P%04d", n), Supplier: "SUP-7",
			Warehouse: "WH", CorrelationID: "corr-" + strconv.Itoa(n), RequisitionKey: "key-" + strconv.Itoa(n),
			Lines: []capture.Line{{Line: "1", Ref: "purchase.line,1", Item: "200201", Quantity: "12.5", Unit: "kg", DeliveryDate: "2026-12-01"}}})}
}

func receipt(t *testing.T, n int) sdk.Change {
	return sdk.Change{ID: fmt.Sprintf("stock.shipment.in,%d:done", n), Kind: capture.KindGoodsReceipt, ExternalRef: fmt.Sprintf("stock.shipment.in,%d", n),
		ChangedAt: time.Date(2026, 11, 27, 11, 0, n, 0, time.UTC),
		Document: doc(t, capture.Document{Document: fmt.Sprintf("stock.shipment.in,%d", n), Number: "IN1", Supplier: "SUP-7", Warehouse: "WH",
			Lines: []capture.Line{
				{Line: "1", Ref: "stock.move,1", Item: "200201", Quantity: "8", Unit: "kg", PurchaseOrder: "P0001", CorrelationID: "corr-1"},
				{Line: "2", Ref: "stock.move,2", Item: "200202", Quantity: "3", Unit: "u", PurchaseOrder: "P0002"},
			}})}
}

type env struct {
	erp     *fakeERP
	journal *journal.Bolt
	cursors *capture.Cursors
	reg     *prometheus.Registry
	poller  *capture.Poller
	dir     string
}

func newEnv(t *testing.T, cfg capture.Config) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{erp: &fakeERP{}, dir: dir, reg: prometheus.NewRegistry()}
	host := sdktest.ServeDestination(t, e.erp)
	sdktest.Configure(t, host, "erp", nil)
	var err error
	if e.journal, err = journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(dir, "journal.db")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.journal.Close() })
	if e.cursors, err = capture.OpenCursors(filepath.Join(dir, "capture.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.cursors.Close() })
	m, err := capture.NewMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	if e.poller, err = capture.New(capture.Options{Destination: "erp", Config: cfg, Source: host, Journal: e.journal, Cursors: e.cursors, Metrics: m,
		Now: func() time.Time { return time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC) }}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) poll(t *testing.T) capture.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.poller.Poll(ctx)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	return res
}

func (e *env) events(t *testing.T) []*pb.Event {
	t.Helper()
	recs, err := e.journal.Read(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*pb.Event, len(recs))
	for i, r := range recs {
		if r.Producer != "erp:erp" {
			t.Errorf("record %d producer %q, want erp:erp", i, r.Producer)
		}
		ev := &pb.Event{}
		if err := proto.Unmarshal(r.Event, ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetId() != r.EventID {
			t.Errorf("record %d: event id %s, journal id %s", i, ev.GetId(), r.EventID)
		}
		out[i] = ev
	}
	return out
}

// Changes become canonical events, journaled once over several pages; the
// cursor is stored after them, so the next poll reads nothing new.
func TestChangesBecomeEventsOnce(t *testing.T) {
	e := newEnv(t, capture.Config{PageSize: 2, Plant: "DE01"})
	e.erp.add(approved(t, 1), receipt(t, 1), approved(t, 2))
	res := e.poll(t)
	if res.Changes != 3 || res.Journaled != 4 || res.Duplicate != 0 || res.Pages != 2 {
		t.Fatalf("first poll = %+v, want 3 changes, 4 events journaled, 2 pages", res)
	}
	if res := e.poll(t); res.Changes != 0 || res.Journaled != 0 {
		t.Errorf("second poll = %+v, want nothing", res)
	}
	if c, _ := e.cursors.Get("erp"); c != "3" {
		t.Errorf("stored cursor %q, want 3", c)
	}
	evs := e.events(t)
	if len(evs) != 4 {
		t.Fatalf("%d journaled events, want 4", len(evs))
	}
	po := evs[0]
	if po.GetType() != "po.approved" || po.GetId() != capture.EventID("erp", "purchase.purchase,1:approved", "") || po.GetPlant() != "DE01" ||
		po.GetCorrelationId() != "corr-1" || po.GetSource().GetKind() != "erp" || po.GetAttributes()["requisition_key"] != "key-1" ||
		!po.GetOccurredAt().AsTime().Equal(time.Date(2026, 11, 27, 10, 0, 1, 0, time.UTC)) {
		t.Errorf("po.approved envelope = %v", po)
	}
	p := po.GetPoApproved()
	if p.GetPurchaseOrder() != "P0001" || p.GetSupplier() != "SUP-7" || p.GetErpReference() != "purchase.purchase,1" || len(p.GetLines()) != 1 ||
		p.GetLines()[0].GetQuantity().GetValue() != "12.5" || p.GetLines()[0].GetQuantity().GetUnit() != "kg" || p.GetLines()[0].GetItem() != "200201" ||
		!p.GetLines()[0].GetDeliveryDate().AsTime().Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("po.approved payload = %v", p)
	}
	for i, want := range []struct{ id, po, item, qty, corr string }{
		{capture.EventID("erp", "stock.shipment.in,1:done", "stock.move,1"), "P0001", "200201", "8", "corr-1"},
		{capture.EventID("erp", "stock.shipment.in,1:done", "stock.move,2"), "P0002", "200202", "3", ""},
	} {
		ev := evs[1+i]
		g := ev.GetGoodsReceipt()
		if ev.GetType() != "goods.receipt" || ev.GetId() != want.id || g.GetPurchaseOrder() != want.po || g.GetItem() != want.item ||
			g.GetQuantity().GetValue() != want.qty || g.GetWarehouse() != "WH" || g.GetErpReference() != "stock.shipment.in,1" {
			t.Errorf("goods.receipt %d = %v", i, ev)
		}
		if want.corr != "" && ev.GetCorrelationId() != want.corr {
			t.Errorf("goods.receipt %d correlation %q, want %q", i, ev.GetCorrelationId(), want.corr)
		}
	}
	if got := counter(t, e.reg, "plantsync_hub_capture_changes_total", "captured"); got != 3 {
		t.Errorf("changes_total{captured} = %v, want 3", got)
	}
	if got := counter(t, e.reg, "plantsync_hub_capture_polls_total", "erp"); got != 2 {
		t.Errorf("polls_total = %v, want 2", got)
	}
}

// counter reads the series of a counter that has a label with value
// label (0 when there is none yet).
func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A page read again (the cursor after it was never stored, as after a
// crash between journal commit and cursor store) yields the same event
// ids, and the journal drops them as duplicates.
func TestRepeatedPageIsDeduplicated(t *testing.T) {
	e := newEnv(t, capture.Config{})
	e.erp.add(approved(t, 1), receipt(t, 1))
	if res := e.poll(t); res.Journaled != 3 {
		t.Fatalf("first poll = %+v", res)
	}
	// The cursor is lost: the connector answers from the start again.
	e.erp.mu.Lock()
	e.erp.ignoreCursor = true
	e.erp.mu.Unlock()
	res := e.poll(t)
	if res.Changes != 2 || res.Journaled != 0 || res.Duplicate != 3 {
		t.Fatalf("repeated page = %+v, want 2 changes, 0 journaled, 3 duplicates", res)
	}
	if n := len(e.events(t)); n != 3 {
		t.Errorf("%d events in the journal, want 3", n)
	}
	// A purchase passing both confirmed and processing is one change id:
	// the connector may report it again after a later write.
	again := approved(t, 1)
	again.ChangedAt = again.ChangedAt.Add(time.Hour)
	e.erp.add(again)
	if res := e.poll(t); res.Changes != 1 || res.Journaled != 0 || res.Duplicate != 1 {
		t.Errorf("the same purchase written again = %+v, want a duplicate", res)
	}
}

type failingJournal struct {
	journal.Journal
	fail bool
}

func (j *failingJournal) Commit(ctx context.Context, b *journal.Batch) (journal.Outcome, error) {
	if j.fail {
		return journal.Outcome{}, errors.New("disk full")
	}
	return j.Journal.Commit(ctx, b)
}

// When the journal commit fails, the cursor stays where it was: the next
// poll reads the same changes again, and nothing is skipped.
func TestJournalFailureKeepsCursor(t *testing.T) {
	e := newEnv(t, capture.Config{})
	fj := &failingJournal{Journal: e.journal, fail: true}
	p, err := capture.New(capture.Options{Destination: "erp", Source: sdktest.ServeDestination(t, e.erp), Journal: fj, Cursors: e.cursors})
	if err != nil {
		t.Fatal(err)
	}
	e.erp.add(approved(t, 1))
	ctx := context.Background()
	if _, err := p.Poll(ctx); err == nil {
		t.Fatal("poll with a failing journal succeeded")
	}
	if c, _ := e.cursors.Get("erp"); c != "" {
		t.Fatalf("cursor stored (%q) although the journal commit failed", c)
	}
	fj.fail = false
	res, err := p.Poll(ctx)
	if err != nil || res.Journaled != 1 {
		t.Fatalf("poll after recovery = %+v, %v", res, err)
	}
	if c, _ := e.cursors.Get("erp"); c != "1" {
		t.Errorf("cursor %q, want 1", c)
	}
}

// Changes plantsync wrote itself (idempotency key set) and unreadable
// documents are not journaled; both are counted, and the cursor moves on.
func TestOwnAndUnreadableChanges(t *testing.T) {
	e := newEnv(t, capture.Config{})
	own := approved(t, 5)
	own.IdempotencyKey = "k-own"
	bad := sdk.Change{ID: "x,1:odd", Kind: "inventory.count", Document: json.RawMessage(`{}`)}
	broken := sdk.Change{ID: "purchase.purchase,6:approved", Kind: capture.KindPOApproved, Document: json.RawMessage(`{"lines":[{"delivery_date":"soon"}]}`)}
	e.erp.add(own, bad, broken, approved(t, 7))
	res := e.poll(t)
	if res.Changes != 4 || res.Journaled != 1 {
		t.Fatalf("poll = %+v, want 4 changes and 1 event", res)
	}
	evs := e.events(t)
	if len(evs) != 1 || evs[0].GetPoApproved().GetPurchaseOrder() != "P0007" {
		t.Errorf("journaled %v", evs)
	}
	for outcome, want := range map[string]float64{"own": 1, "skipped": 2, "captured": 1} {
		if got := counter(t, e.reg, "plantsync_hub_capture_changes_total", outcome); got != want {
			t.Errorf("changes_total{%s} = %v, want %v", outcome, got, want)
		}
	}
	if got := counter(t, e.reg, "plantsync_hub_capture_errors_total", "document"); got != 2 {
		t.Errorf("errors_total{document} = %v, want 2", got)
	}
}

// Started, the poller polls on its schedule until Shutdown; a connector
// error is counted and retried on the next tick.
func TestScheduleAndErrors(t *testing.T) {
	e := newEnv(t, capture.Config{PollInterval: 20 * time.Millisecond})
	e.erp.mu.Lock()
	e.erp.fail = errors.New("tryton down")
	e.erp.mu.Unlock()
	e.erp.add(approved(t, 1))
	if err := e.poller.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for counter(t, e.reg, "plantsync_hub_capture_errors_total", "changes") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("no failed polls counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := e.poller.Status(); st.LastError == "" {
		t.Errorf("status after failures = %+v", st)
	}
	e.erp.mu.Lock()
	e.erp.fail = nil
	e.erp.mu.Unlock()
	// The change journaled, and a poll finished since the recovery (the
	// journal shows the change before its poll has finished).
	for len(e.events(t)) != 1 || e.poller.Status().LastPoll.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("the change never arrived after the connector recovered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.poller.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.poller.Shutdown(ctx); err != nil {
		t.Errorf("second shutdown: %v", err)
	}
	if st := e.poller.Status(); st.LastError != "" || st.LastPoll.IsZero() {
		t.Errorf("status after recovery = %+v", st)
	}
}

// The cursor survives reopening its store.
func TestCursorsDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "capture.db")
	c, err := capture.OpenCursors(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Put("erp", "abc"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c, err = capture.OpenCursors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if got, err := c.Get("erp"); err != nil || got != "abc" {
		t.Errorf("cursor after reopen = %q, %v", got, err)
	}
	if got, _ := c.Get("other"); got != "" {
		t.Errorf("unknown destination cursor = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  capture.Config
		want string
	}{
		{capture.Config{PollInterval: time.Millisecond}, "changes.poll_interval: 1ms; want 10ms to 24h"},
		{capture.Config{PageSize: 5000}, "changes.page_size: 5000; want 1 to 1000"},
	} {
		errs := tc.cfg.Validate("changes")
		if len(errs) != 1 || errs[0].Error()[:len(tc.want)] != tc.want {
			t.Errorf("%+v: %v, want %q", tc.cfg, errs, tc.want)
		}
	}
	if errs := (capture.Config{}).Validate("changes"); len(errs) != 0 {
		t.Errorf("zero config: %v", errs)
	}
	if d := (capture.Config{}).WithDefaults(); d.PollInterval != 30*time.Second || d.PageSize != 100 {
		t.Errorf("defaults = %+v", d)
	}
}
