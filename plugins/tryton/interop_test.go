//go:build interop

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// These tests run against a real Tryton 6.0 (scripts/peers/tryton.sh
// installs it and builds the seeded database; scripts/interop.sh exports
// where). Each test copies the seed and starts its own trytond on
// 127.0.0.1, and drives it through the real plugin binary.

type trytonServer struct {
	url      string
	password string // file: reference for the plugin config
	rpc      *client
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = in.Close() }()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// startTryton starts trytond on a copy of the seed. sessionMaxAge > 0 makes
// sessions expire that many seconds after login (Tryton 6.0 checks
// [session] max_age on every call, default 30 days; the 300 s idle
// [session] timeout only guards "fresh session" methods).
func startTryton(t testing.TB, sessionMaxAge int) *trytonServer {
	t.Helper()
	trytond, seed := os.Getenv("PLANTSYNC_TRYTOND"), os.Getenv("PLANTSYNC_TRYTON_SEED")
	if trytond == "" || seed == "" {
		t.Fatal("PLANTSYNC_TRYTOND and PLANTSYNC_TRYTON_SEED are not set; run through `make interop` (scripts/peers/tryton.sh)")
	}
	dir := t.TempDir()
	copyFile(t, filepath.Join(seed, "plantsync.sqlite"), filepath.Join(dir, "plantsync.sqlite"))
	pass, err := os.ReadFile(filepath.Join(seed, "admin.pass"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := fmt.Sprintf("[database]\nuri = sqlite://\npath = %s\n[web]\nlisten = 127.0.0.1:%d\n", dir, port)
	if sessionMaxAge > 0 {
		conf += fmt.Sprintf("[session]\nmax_age = %d\ntimeout = %d\n", sessionMaxAge, sessionMaxAge)
	}
	if err := os.WriteFile(filepath.Join(dir, "trytond.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "trytond.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(trytond, "-c", filepath.Join(dir, "trytond.conf"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		_ = logf.Close()
		if t.Failed() {
			raw, _ := os.ReadFile(filepath.Join(dir, "trytond.log"))
			t.Logf("trytond log:\n%s", tail(string(raw), 40))
		}
	})
	cfg := NewDefaultConfig()
	cfg.URL, cfg.Database, cfg.Password = fmt.Sprintf("http://127.0.0.1:%d", port), "plantsync", strings.TrimSpace(string(pass))
	s := &trytonServer{url: cfg.URL, password: "file:" + filepath.Join(seed, "admin.pass"), rpc: newClient(cfg)}
	t.Cleanup(s.rpc.close)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := s.rpc.version(ctx)
		cancel()
		if err == nil {
			return s
		}
		select {
		case <-exited:
			t.Fatalf("trytond exited during start")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("trytond did not answer on %s: %v", cfg.URL, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var (
	buildOnce sync.Once
	binPath   string
	binErr    error
)

// pluginBinary builds this plugin's binary once per test run.
func pluginBinary(t testing.TB) (path, sum string) {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "plantsync-tryton-plugin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "tryton")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	sum, err := sdk.FileSHA256(binPath)
	if err != nil {
		t.Fatal(err)
	}
	return binPath, sum
}

func openPlugin(t testing.TB, s *trytonServer) *sdk.DestinationHost {
	t.Helper()
	path, sum := pluginBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := sdk.OpenDestination(ctx, sdk.HostConfig{Name: "erp", Path: path, SHA256: sum,
		Config: map[string]any{"url": s.url, "database": "plantsync", "password": s.password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func ctx10(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// requisitionDoc is what the hub's pipeline builds for a material shortage
// (hub/pipeline testdata golden material-shortage), in this seed's codes.
func requisitionDoc(item, qty, unit string) json.RawMessage {
	doc, _ := json.Marshal(map[string]any{"correlation_id": "corr-shortage", "event_id": "ev-shortage", "plant": "1",
		"occurred_at": "2026-11-27T10:00:00Z", "item": item, "quantity": qty, "unit": unit, "required_by": "2026-12-01T00:00:00Z",
		"warehouse": "WH", "production_order": "PO-1001", "work_center": "DE01-L1-M1"})
	return doc
}

type requestRow struct {
	ID          int     `json:"id"`
	Quantity    float64 `json:"quantity"`
	Description string  `json:"description"`
	SupplyDate  *date   `json:"supply_date"`
	State       string  `json:"state"`
	UOM         int     `json:"uom"`
	Product     int     `json:"product"`
	Warehouse   int     `json:"warehouse"`
}

func requestsWithKey(t testing.TB, s *trytonServer, key string) []requestRow {
	t.Helper()
	var rows []requestRow
	err := s.rpc.call(ctx10(t), "model.purchase.request.search_read", []any{[]any{[]any{"description", "like", "%" + marker(key) + "%"}},
		0, nil, nil, []string{"id", "quantity", "description", "supply_date", "state", "uom", "product", "warehouse"}, map[string]any{"company": 1}}, &rows)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// A purchase_requisition.create through the plugin binary creates exactly
// one purchase.request, found again by Lookup; the same idempotency key
// delivered again creates nothing more.
func TestInteropTrytonRequisition(t *testing.T) {
	s := startTryton(t, 0)
	d := openPlugin(t, s)
	info := d.Info()
	for _, a := range actions {
		if !info.Supports(a) {
			t.Errorf("Configure does not declare %s: %+v", a, info)
		}
	}
	if !info.Has(sdk.CapabilityLookup) || !info.Has(sdk.CapabilityList) {
		t.Errorf("capabilities = %v", info.Capabilities)
	}
	const key = "c17a613d727280b5435d0f65828db7b2"
	ctx := ctx10(t)
	if lk, err := d.Lookup(ctx, sdk.LookupRequest{IdempotencyKey: key, Action: ActionPurchaseRequisitionCreate}); err != nil || lk.Status != sdk.LookupNotFound {
		t.Fatalf("lookup before = %+v, %v", lk, err)
	}
	req := sdk.DeliverRequest{IdempotencyKey: key, Action: ActionPurchaseRequisitionCreate, OrderingKey: "shortage:DE01:MAT-2001",
		CorrelationID: "corr-shortage", Attempt: 1, Document: requisitionDoc("200201", "8.147", "kg")}
	first, err := d.Deliver(ctx, req)
	if err != nil || first.Outcome != sdk.OutcomeOK || !strings.HasPrefix(first.ExternalRef, "purchase.request,") {
		t.Fatalf("first delivery = %+v, %v", first, err)
	}
	req.Attempt = 2
	again, err := d.Deliver(ctx, req)
	if err != nil || again.Outcome != sdk.OutcomeOK || again.ExternalRef != first.ExternalRef {
		t.Fatalf("second delivery = %+v, %v (first %s)", again, err, first.ExternalRef)
	}
	rows := requestsWithKey(t, s, key)
	if len(rows) != 1 {
		t.Fatalf("%d purchase requests carry the key, want exactly 1: %+v", len(rows), rows)
	}
	r := rows[0]
	if fmt.Sprintf("purchase.request,%d", r.ID) != first.ExternalRef || r.Quantity != 8.15 || r.State != "draft" ||
		r.SupplyDate.time() != time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) || !strings.Contains(r.Description, "PO-1001") ||
		!strings.Contains(r.Description, "corr-shortage") {
		t.Errorf("purchase request = %+v (8.147 kg rounds up to the unit's 2 decimals)", r)
	}
	lk, err := d.Lookup(ctx, sdk.LookupRequest{IdempotencyKey: key, Action: ActionPurchaseRequisitionCreate})
	if err != nil || lk.Status != sdk.LookupFound || lk.ExternalRef != first.ExternalRef {
		t.Fatalf("lookup after = %+v, %v", lk, err)
	}
	list, err := d.List(ctx, sdk.ListRequest{Since: time.Now().Add(-time.Hour)})
	if err != nil || len(list.Documents) != 1 || list.Documents[0].IdempotencyKey != key || list.Documents[0].ExternalRef != first.ExternalRef {
		t.Errorf("list = %+v, %v", list, err)
	}
	if h, err := d.Health(ctx, sdk.HealthRequest{}); err != nil || !h.Healthy {
		t.Errorf("health = %+v, %v", h, err)
	}

	// Refusals are permanent and say why.
	for _, tc := range []struct {
		req  sdk.DeliverRequest
		want string
	}{
		{sdk.DeliverRequest{IdempotencyKey: "k-unknown-item", Action: ActionPurchaseRequisitionCreate, Document: requisitionDoc("999999", "1", "kg")}, `no product "999999"`},
		{sdk.DeliverRequest{IdempotencyKey: "k-unit", Action: ActionPurchaseRequisitionCreate, Document: requisitionDoc("200201", "1", "parsec")}, `unit "parsec"`},
		{sdk.DeliverRequest{IdempotencyKey: "k-uom-category", Action: ActionPurchaseRequisitionCreate, Document: requisitionDoc("200201", "1", "u")}, "tryton UserError"},
		{sdk.DeliverRequest{IdempotencyKey: "k-action", Action: "inventory.block", Document: requisitionDoc("200201", "1", "kg")}, `unsupported action "inventory.block"`},
	} {
		res, err := d.Deliver(ctx, tc.req)
		if err != nil || res.Outcome != sdk.OutcomePermanent || !strings.Contains(res.Message, tc.want) {
			t.Errorf("%s: %+v, %v; want permanent with %q", tc.req.IdempotencyKey, res, err, tc.want)
		}
		if n := len(requestsWithKey(t, s, tc.req.IdempotencyKey)); n != 0 {
			t.Errorf("%s: a refused delivery left %d requests", tc.req.IdempotencyKey, n)
		}
	}
}

// Production order status, reschedule and confirm set values; Lookup says
// whether Tryton holds them, and a transition Tryton cannot make is a
// permanent error, not a silent no-op.
func TestInteropTrytonProduction(t *testing.T) {
	s := startTryton(t, 0)
	d := openPlugin(t, s)
	ctx := ctx10(t)
	tctx := map[string]any{"company": 1}
	var prods, locs []struct {
		ID int `json:"id"`
	}
	if err := s.rpc.call(ctx, "model.product.product.search_read", []any{[]any{[]any{"code", "=", "100471"}}, 0, 1, nil, []string{"id"}, tctx}, &prods); err != nil || len(prods) != 1 {
		t.Fatalf("product 100471: %v %v", prods, err)
	}
	if err := s.rpc.call(ctx, "model.stock.location.search_read", []any{[]any{[]any{"code", "=", "PROD"}}, 0, 1, nil, []string{"id"}, tctx}, &locs); err != nil || len(locs) != 1 {
		t.Fatalf("production location: %v %v", locs, err)
	}
	wh, err := (&Connector{ids: map[string]int{}, rpc: s.rpc, cfg: NewDefaultConfig()}).resolve(ctx, "warehouse", "stock.location",
		[]any{[]any{"type", "=", "warehouse"}, []any{"code", "=", "WH"}}, "WH")
	if err != nil {
		t.Fatal(err)
	}
	day := encodeDate(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	var ids []int
	if err := s.rpc.call(ctx, "model.production.create", []any{[]any{map[string]any{"product": prods[0].ID, "quantity": 10, "uom": 1,
		"warehouse": wh, "location": locs[0].ID, "company": 1, "planned_date": day, "planned_start_date": day, "reference": "PO-1001"}}, tctx}, &ids); err != nil {
		t.Fatal(err)
	}
	status := func(st string) json.RawMessage {
		b, _ := json.Marshal(map[string]string{"production_order": "PO-1001", "status": st, "work_center": "DE01-L1-M2"})
		return b
	}
	deliver := func(action string, doc json.RawMessage) sdk.DeliverResponse {
		t.Helper()
		res, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: "k-" + action, Action: action, Document: doc})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	lookup := func(action string, doc json.RawMessage) sdk.LookupStatus {
		t.Helper()
		lk, err := d.Lookup(ctx, sdk.LookupRequest{IdempotencyKey: "k", Action: action, Document: doc})
		if err != nil {
			t.Fatal(err)
		}
		return lk.Status
	}
	if st := lookup(ActionProductionOrderUpdateStatus, status("running")); st != sdk.LookupNotFound {
		t.Errorf("lookup running before = %s", st)
	}
	if res := deliver(ActionProductionOrderUpdateStatus, status("running")); res.Outcome != sdk.OutcomeOK || res.ExternalRef != fmt.Sprintf("production,%d", ids[0]) {
		t.Fatalf("update_status running = %+v", res)
	}
	if st := lookup(ActionProductionOrderUpdateStatus, status("running")); st != sdk.LookupFound {
		t.Errorf("lookup running after = %s", st)
	}
	if res := deliver(ActionProductionOrderUpdateStatus, status("running")); res.Outcome != sdk.OutcomeOK {
		t.Errorf("update_status running again = %+v", res)
	}
	if res := deliver(ActionProductionOrderUpdateStatus, status("released")); res.Outcome != sdk.OutcomePermanent || !strings.Contains(res.Message, "from running back to waiting") {
		t.Errorf("update_status backwards = %+v", res)
	}
	resched, _ := json.Marshal(map[string]any{"production_order": "PO-1001", "new_start": "2026-12-04T06:00:00Z", "new_quantity": "12"})
	if st := lookup(ActionProductionOrderReschedule, resched); st != sdk.LookupNotFound {
		t.Errorf("lookup reschedule before = %s", st)
	}
	if res := deliver(ActionProductionOrderReschedule, resched); res.Outcome != sdk.OutcomeOK {
		t.Fatalf("reschedule = %+v", res)
	}
	if st := lookup(ActionProductionOrderReschedule, resched); st != sdk.LookupFound {
		t.Errorf("lookup reschedule after = %s", st)
	}
	confirm, _ := json.Marshal(map[string]any{"production_order": "PO-1001", "good_quantity": "12", "unit": "u"})
	if res := deliver(ActionProductionOrderConfirm, confirm); res.Outcome != sdk.OutcomeOK {
		t.Fatalf("confirm = %+v", res)
	}
	var rows []production
	if err := s.rpc.call(ctx, "model.production.read", []any{ids, productionFields, tctx}, &rows); err != nil {
		t.Fatal(err)
	}
	if p := rows[0]; p.State != "done" || p.Quantity != 12 || p.PlannedStartDate.time() != time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC) {
		t.Errorf("production = %+v", p)
	}
	missing, _ := json.Marshal(map[string]string{"production_order": "PO-404", "status": "running"})
	if res := deliver(ActionProductionOrderUpdateStatus, missing); res.Outcome != sdk.OutcomePermanent || !strings.Contains(res.Message, `"PO-404"`) {
		t.Errorf("unknown order = %+v", res)
	}
}

// Sessions expire (here 2 s after login): the connector logs in again on
// the 401 and the delivery goes through.
func TestInteropTrytonSessionExpiry(t *testing.T) {
	s := startTryton(t, 2)
	d := openPlugin(t, s)
	ctx := ctx10(t)
	if res, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: "k-session-1", Action: ActionPurchaseRequisitionCreate,
		Document: requisitionDoc("200202", "3", "u")}); err != nil || res.Outcome != sdk.OutcomeOK {
		t.Fatalf("first = %+v, %v", res, err)
	}
	// The test's own session proves the server really expires them.
	if err := s.rpc.login(ctx, 0); err != nil {
		t.Fatal(err)
	}
	s.rpc.mu.Lock()
	auth := s.rpc.session
	s.rpc.mu.Unlock()
	time.Sleep(3 * time.Second)
	if err := s.rpc.post(ctx, "/plantsync/", auth, "model.res.user.get_preferences", []any{true, map[string]any{}}, nil); !errors.Is(err, errSession) {
		t.Fatalf("an idle session after the timeout: %v, want a 401", err)
	}
	if res, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: "k-session-2", Action: ActionPurchaseRequisitionCreate,
		Document: requisitionDoc("200202", "4", "u")}); err != nil || res.Outcome != sdk.OutcomeOK {
		t.Fatalf("after expiry = %+v, %v", res, err)
	}
	if n := len(requestsWithKey(t, s, "k-session-2")); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

// BenchmarkInteropTrytonCreate measures purchase.request creations per
// second through the plugin process (search by key, then create), with 8
// ordering keys in parallel.
//
//	bash scripts/peers/tryton.sh   # prints the exports
//	go test -tags interop -run '^$' -bench BenchmarkInteropTrytonCreate -benchtime 200x ./plugins/tryton
func BenchmarkInteropTrytonCreate(b *testing.B) {
	s := startTryton(b, 0)
	d := openPlugin(b, s)
	ctx := context.Background()
	doc := requisitionDoc("200202", "5", "u")
	var failed atomic.Int64
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				res, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: fmt.Sprintf("bench-%d", i), Action: ActionPurchaseRequisitionCreate, Document: doc})
				if err != nil || res.Outcome != sdk.OutcomeOK {
					failed.Add(1)
					b.Logf("delivery %d: %+v %v", i, res, err)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d deliveries failed", failed.Load())
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "creations/s")
}
