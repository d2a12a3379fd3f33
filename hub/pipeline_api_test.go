package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/hub"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/internal/testkit"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// apiHub is a started hub whose pipeline has small crosswalks, with
// helpers to journal events and call the API.
type apiHub struct {
	t      *testing.T
	h      *hub.Hub
	client *http.Client
	seq    uint64
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startAPIHub(t *testing.T) *apiHub {
	t.Helper()
	// Cleanups run last-in first-out: this one runs after the hub stopped.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p := testkit.NewPKI(t)
	dir := t.TempDir()
	cfg := testkit.HubConfig(t, p, filepath.Join(dir, "hub"))
	cfg.HTTP.OpsListen = "127.0.0.1:0"
	cfg.Pipeline.Crosswalks.Inbound = map[string]string{
		"plant": writeFile(t, dir, "plant.csv", "local_plant,plant\nDE-01,DE01\n"),
		"item":  writeFile(t, dir, "item.csv", "plant,local_item,item\nDE-01,P-4711,MAT-4711\n"),
		"unit":  writeFile(t, dir, "unit.csv", "plant,local_unit,unit,factor\n*,EA,EA,1\n*,KG,KG,1\n"),
	}
	cfg.Pipeline.Crosswalks.Outbound = map[string]map[string]string{
		"erp": {"unit": writeFile(t, dir, "erp-unit.csv", "unit,external_unit,factor,decimals\nEA,Unit,1,0\nKG,kg,1,3\n")},
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	h := hub.New(cfg, nil)
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := &apiHub{t: t, h: h, client: &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}}
	t.Cleanup(func() {
		a.client.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return a
}

func (a *apiHub) journal(evs ...*pb.Event) uint64 {
	a.t.Helper()
	b := &journal.Batch{Producer: "agent:a1", Epoch: "e1", Agent: &journal.AgentInfo{ID: "a1", Plant: "DE-01"}}
	for _, ev := range evs {
		a.seq++
		raw, _ := proto.Marshal(ev)
		b.Events = append(b.Events, journal.Incoming{Sequence: a.seq, ID: ev.GetId(), Raw: raw})
	}
	b.LastSequence = a.seq
	o, err := a.h.Journal().Commit(context.Background(), b)
	if err != nil {
		a.t.Fatal(err)
	}
	last := o.Results[len(o.Results)-1].Position
	testkit.Eventually(a.t, 10*time.Second, "pipeline caught up", func() bool { return a.h.Pipeline().Status().Cursor >= last })
	return last
}

// call sends a request with token ("" for none) and decodes a JSON answer.
func (a *apiHub) call(method, path, token string, body any, hdr map[string]string) (int, map[string]any) {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.h.URL()+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	if out == nil {
		out = map[string]any{"raw": string(raw)}
	}
	out["_etag"] = resp.Header.Get("ETag")
	return resp.StatusCode, out
}

func (a *apiHub) mustCall(code int, method, path, token string, body any, hdr map[string]string) map[string]any {
	a.t.Helper()
	got, out := a.call(method, path, token, body, hdr)
	if got != code {
		a.t.Fatalf("%s %s: %d %v; want %d", method, path, got, out, code)
	}
	return out
}

func list(m map[string]any, key string) []any {
	l, _ := m[key].([]any)
	return l
}

func field(v any, path ...string) any {
	for _, p := range path {
		m, _ := v.(map[string]any)
		v = m[p]
	}
	return v
}

var at = timestamppb.New(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))

func completionEvent(id, item string) *pb.Event {
	return &pb.Event{Id: id, Plant: "DE-01", Type: "production.completion", OccurredAt: at, CorrelationId: "corr-" + id, SchemaVersion: 1,
		Payload: &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{Order: "PO-1", Item: item, Good: &pb.Quantity{Value: "3", Unit: "EA"}}}}
}

func scheduleEvent(id, order string, prevQty, newQty string, shift time.Duration) *pb.Event {
	start := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	return &pb.Event{Id: id, Plant: "DE-01", Type: "schedule.change", OccurredAt: at, SchemaVersion: 1,
		Payload: &pb.Event_ScheduleChange{ScheduleChange: &pb.ScheduleChange{Order: order, Item: "P-4711",
			PreviousStart: timestamppb.New(start), NewStart: timestamppb.New(start.Add(shift)),
			PreviousQuantity: &pb.Quantity{Value: prevQty, Unit: "EA"}, NewQuantity: &pb.Quantity{Value: newQty, Unit: "EA"}}}}
}

func statusEvent(id, order string) *pb.Event {
	return &pb.Event{Id: id, Plant: "DE-01", Type: "production.order.status", OccurredAt: at, SchemaVersion: 1,
		Payload: &pb.Event_ProductionOrderStatus{ProductionOrderStatus: &pb.ProductionOrderStatus{Order: order, Status: "released"}}}
}

// erpEntries lists the erp outbox oldest first as (action, event id).
func (a *apiHub) erpEntries() []string {
	a.t.Helper()
	out := a.mustCall(200, "GET", "/api/v1/outbox/erp?after=0&limit=1000", testkit.ViewerToken, nil, nil)
	var got []string
	for _, e := range list(out, "entries") {
		got = append(got, fmt.Sprintf("%s %s", field(e, "action"), field(e, "lineage", "event_id")))
	}
	return got
}

// An unmapped item parks the event; an admin adds the crosswalk row over
// the API and replays: exactly one outbox entry, however often replay is
// pressed.
func TestUnmappedItemRowAddedReplayedExactlyOnce(t *testing.T) {
	a := startAPIHub(t)
	a.journal(completionEvent("ev-1", "P-4712"))

	out := a.mustCall(200, "GET", "/api/v1/exceptions?kind=unmapped_item&plant=DE-01", testkit.ViewerToken, nil, nil)
	excs := list(out, "exceptions")
	if len(excs) != 1 || field(excs[0], "reason") != `unmapped item "P-4712" at plant "DE-01"` || field(excs[0], "event", "id") != "ev-1" {
		t.Fatalf("exceptions: %v", out)
	}
	id := fmt.Sprint(field(excs[0], "id"))
	if got := a.erpEntries(); len(got) != 0 {
		t.Fatalf("outbox before the fix: %v", got)
	}

	row := map[string]any{"rows": []map[string]string{{"plant": "DE-01", "local_item": "P-4712", "item": "MAT-4712"}}}
	a.mustCall(403, "POST", "/api/v1/crosswalks/item/rows", testkit.ApproverToken, row, nil)
	res := a.mustCall(200, "POST", "/api/v1/crosswalks/item/rows", testkit.AdminToken, row, nil)
	if res["version"] != 2.0 || res["_etag"] != `"2"` {
		t.Fatalf("upsert: %v", res)
	}
	hist := a.mustCall(200, "GET", "/api/v1/crosswalks/item/history", testkit.ViewerToken, nil, nil)
	if c := list(hist, "changes"); len(c) != 2 || field(c[0], "subject") != "test-admin" || field(c[0], "action") != "upsert" {
		t.Fatalf("history: %v", hist)
	}

	r := a.mustCall(200, "POST", "/api/v1/exceptions/"+id+"/replay", testkit.AdminToken, nil, nil)
	if r["outcome"] != "resolved" || r["emitted"] != 1.0 {
		t.Fatalf("replay: %v", r)
	}
	for range 3 {
		if r := a.mustCall(200, "POST", "/api/v1/exceptions/"+id+"/replay", testkit.AdminToken, nil, nil); r["outcome"] != "already_resolved" {
			t.Fatalf("second replay: %v", r)
		}
	}
	bulk := a.mustCall(200, "POST", "/api/v1/exceptions/replay", testkit.AdminToken, map[string]any{"kind": "unmapped_item"}, nil)
	if bulk["replayed"] != 0.0 {
		t.Fatalf("bulk replay: %v", bulk)
	}
	if got := a.erpEntries(); len(got) != 1 || got[0] != "production_order.confirm ev-1" {
		t.Fatalf("outbox after replays: %v", got)
	}
	// Lineage: the entry was mapped with item table version 2, by the
	// replay of the exception.
	tr := a.mustCall(200, "GET", "/api/v1/trace/corr-ev-1", testkit.ViewerToken, nil, nil)
	ob := list(tr, "outbox")
	if len(ob) != 1 || field(ob[0], "lineage", "crosswalks", "item") != 2.0 || field(ob[0], "lineage", "replay_of") != 1.0 ||
		len(list(tr, "exceptions")) != 1 || field(list(tr, "exceptions")[0], "state") != "resolved" || len(list(tr, "events")) != 1 {
		t.Fatalf("trace: %v", tr)
	}
}

// A small date shift flows; a large quantity change waits and blocks a
// later action of the same order until approved, then both flow in order;
// a rejected one never leaves.
func TestApprovalsHoldAndKeepOrder(t *testing.T) {
	a := startAPIHub(t)
	a.journal(scheduleEvent("s-small", "PO-1", "100", "105", 3*time.Hour))
	a.journal(scheduleEvent("s-large", "PO-1", "100", "150", 0))
	a.journal(statusEvent("st-1", "PO-1"))
	a.journal(statusEvent("st-other", "PO-2"))

	if got := a.erpEntries(); strings.Join(got, "|") != "production_order.reschedule s-small|production_order.update_status st-other" {
		t.Fatalf("outbox while held: %v", got)
	}
	out := a.mustCall(200, "GET", "/api/v1/approvals", testkit.ViewerToken, nil, nil)
	aps := list(out, "approvals")
	if len(aps) != 1 || field(aps[0], "rule") != "large-quantity-change" || field(aps[0], "entry", "lineage", "event_id") != "s-large" {
		t.Fatalf("approvals: %v", out)
	}
	if w := list(aps[0].(map[string]any), "waiting"); len(w) != 1 || field(w[0], "action") != "production_order.update_status" || field(w[0], "event_id") != "st-1" {
		t.Fatalf("waiting: %v", aps[0])
	}
	id := fmt.Sprint(field(aps[0], "id"))
	a.mustCall(403, "POST", "/api/v1/approvals/"+id+"/approve", testkit.ViewerToken, map[string]string{"comment": "ok"}, nil)
	res := a.mustCall(200, "POST", "/api/v1/approvals/"+id+"/approve", testkit.ApproverToken, map[string]string{"comment": "customer agreed"}, nil)
	if res["released"] != 2.0 || field(res, "approval", "decided_by") != "test-approver" || field(res, "approval", "comment") != "customer agreed" {
		t.Fatalf("approve: %v", res)
	}
	want := "production_order.reschedule s-small|production_order.update_status st-other|production_order.reschedule s-large|production_order.update_status st-1"
	if got := a.erpEntries(); strings.Join(got, "|") != want {
		t.Fatalf("outbox after approval:\n%v\nwant %s", got, want)
	}
	a.mustCall(409, "POST", "/api/v1/approvals/"+id+"/reject", testkit.ApproverToken, nil, nil)

	// A large date shift of another order is rejected: it never leaves,
	// and what queued behind it is released.
	a.journal(scheduleEvent("s-move", "PO-3", "10", "10", 72*time.Hour))
	a.journal(statusEvent("st-3", "PO-3"))
	aps = list(a.mustCall(200, "GET", "/api/v1/approvals", testkit.ViewerToken, nil, nil), "approvals")
	if len(aps) != 1 || field(aps[0], "rule") != "large-date-shift" {
		t.Fatalf("approvals: %v", aps)
	}
	id = fmt.Sprint(field(aps[0], "id"))
	a.mustCall(200, "POST", "/api/v1/approvals/"+id+"/reject", testkit.ApproverToken, map[string]string{"comment": "line is full"}, nil)
	got := a.erpEntries()
	if strings.Contains(strings.Join(got, "|"), "s-move") || got[len(got)-1] != "production_order.update_status st-3" {
		t.Fatalf("after reject: %v", got)
	}
	if n := len(list(a.mustCall(200, "GET", "/api/v1/approvals?state=rejected", testkit.ViewerToken, nil, nil), "approvals")); n != 1 {
		t.Fatalf("%d rejected", n)
	}
}

func TestAPIRefusesClearly(t *testing.T) {
	a := startAPIHub(t)
	a.journal(completionEvent("ev-1", "P-4711"))
	for _, c := range []struct {
		method, path, token string
		body                any
		hdr                 map[string]string
		code                int
		want                string
	}{
		{"GET", "/api/v1/events", "", nil, nil, 401, "missing bearer token"},
		{"GET", "/api/v1/agents", "wrong", nil, nil, 401, "unknown or revoked token"},
		{"GET", "/api/v1/nope", "", nil, nil, 401, "missing bearer token"},
		{"GET", "/api/v1/nope", testkit.ViewerToken, nil, nil, 404, "no endpoint GET /api/v1/nope"},
		{"PUT", "/api/v1/crosswalks/item", testkit.ViewerToken, `{"rows":[]}`, nil, 403, "test-viewer has role viewer; this needs admin"},
		{"POST", "/api/v1/alerts/1/ack", testkit.ViewerToken, nil, nil, 403, "needs approver"},
		{"PUT", "/api/v1/crosswalks/item", testkit.AdminToken, `{"rows":[]}`, nil, 412, "If-Match required"},
		{"PUT", "/api/v1/crosswalks/item", testkit.AdminToken, `{"rows":[]}`, map[string]string{"If-Match": `"7"`}, 412, "table item is at version 1, If-Match says 7"},
		{"PUT", "/api/v1/crosswalks/colour", testkit.AdminToken, `{"rows":[]}`, map[string]string{"If-Match": `"0"`}, 404, `unknown crosswalk table "colour"`},
		{"PUT", "/api/v1/crosswalks/item", testkit.AdminToken, "plant,local_item,item\nDE-01,P-1,M-1\nDE-01,,M-2\n",
			map[string]string{"If-Match": `"1"`, "Content-Type": "text/csv"}, 400, "request body line 3: column local_item: empty"},
		{"POST", "/api/v1/crosswalks/item/rows", testkit.AdminToken, `{"rows": [{"plant": "DE-01"`, nil, 400, "request body: unexpected EOF"},
		{"POST", "/api/v1/crosswalks/item/rows", testkit.AdminToken, `{"rows": "x"}`, nil, 400, "request body: field rows at byte offset 12"},
		{"POST", "/api/v1/crosswalks/item/rows", testkit.AdminToken, `{"row": []}`, nil, 400, `unknown field "row"`},
		{"POST", "/api/v1/crosswalks/item/rows", testkit.AdminToken, `{"rows": [{"plant": "DE-01", "local_item": "X", "item": "*"}]}`, nil, 400, "column item: * is only allowed in key columns"},
		{"GET", "/api/v1/exceptions?state=bogus", testkit.ViewerToken, nil, nil, 400, `state "bogus"; want open, resolved or all`},
		{"GET", "/api/v1/exceptions/abc", testkit.ViewerToken, nil, nil, 400, `id "abc" is not an id`},
		{"GET", "/api/v1/exceptions/99", testkit.ViewerToken, nil, nil, 404, "exception not found: 99"},
		{"POST", "/api/v1/exceptions/replay", testkit.AdminToken, `{}`, nil, 400, `give a filter (plant, type, kind, reason), or {"all": true}`},
		{"POST", "/api/v1/approvals/1/maybe", testkit.ApproverToken, nil, nil, 404, "POST .../approve or .../reject"},
		{"POST", "/api/v1/approvals/1/approve", testkit.ApproverToken, nil, nil, 404, "approval not found: 1"},
		{"GET", "/api/v1/outbox/sap", testkit.ViewerToken, nil, nil, 404, `unknown destination "sap"`},
		{"GET", "/api/v1/trace/nothing", testkit.ViewerToken, nil, nil, 404, "no trace for this correlation id"},
		{"GET", "/api/v1/schemas/coffee.brewed", testkit.ViewerToken, nil, nil, 404, `no schema for event type "coffee.brewed"`},
	} {
		code, out := a.call(c.method, c.path, c.token, c.body, c.hdr)
		if code != c.code || !strings.Contains(fmt.Sprint(out["error"]), c.want) {
			t.Errorf("%s %s: %d %v; want %d %q", c.method, c.path, code, out["error"], c.code, c.want)
		}
	}
	// Nothing was lost on the way: the table is still at version 1.
	if tbl := a.mustCall(200, "GET", "/api/v1/crosswalks/item", testkit.ViewerToken, nil, nil); tbl["version"] != 1.0 || tbl["_etag"] != `"1"` || len(list(tbl, "rows")) != 1 {
		t.Fatalf("table: %v", tbl)
	}
	// A correct replace with the current version works and bumps it.
	put := a.mustCall(200, "PUT", "/api/v1/crosswalks/item", testkit.AdminToken, "plant,local_item,item\nDE-01,P-4711,MAT-4711\nDE-01,P-4712,MAT-4712\n",
		map[string]string{"If-Match": `"1"`, "Content-Type": "text/csv"})
	if put["version"] != 2.0 || put["rows"] != 2.0 {
		t.Fatalf("put: %v", put)
	}
	// /healthz and /metrics stay open, and the pipeline's metrics are there.
	resp, err := a.client.Get(a.h.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"plantsync_hub_pipeline_processed_total 1", `plantsync_hub_outbox_depth{destination="erp"}`, "plantsync_hub_approvals_pending 0",
		"plantsync_hub_pipeline_lag_events 0", `plantsync_hub_alerts_raised_total{severity="critical"} 0`} {
		if !strings.Contains(string(raw), m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	if code, out := a.call("GET", "/healthz", "", nil, nil); code != 200 || out["healthy"] != true || out["pipeline_cursor"] != 1.0 {
		t.Fatalf("healthz: %d %v", code, out)
	}
	// The ops listener serves health and metrics, and nothing else.
	for path, code := range map[string]int{"/healthz": 200, "/metrics": 200, "/api/v1/events": 404} {
		resp, err := a.client.Get(a.h.OpsURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != code {
			t.Errorf("ops %s: %d, want %d", path, resp.StatusCode, code)
		}
	}
	sch := a.mustCall(200, "GET", "/api/v1/schemas", testkit.ViewerToken, nil, nil)
	if n := len(list(sch, "schemas")); n != 14 {
		t.Fatalf("%d schemas", n)
	}
}

func TestAlertsListAndAck(t *testing.T) {
	a := startAPIHub(t)
	a.journal(&pb.Event{Id: "ov", Plant: "DE-01", Type: "buffer.overflow", OccurredAt: at,
		Payload: &pb.Event_BufferOverflow{BufferOverflow: &pb.BufferOverflow{Dropped: []*pb.SequenceRange{{First: 1, Last: 4}}, Policy: "drop_oldest"}}})
	var alerts []any
	testkit.Eventually(t, 10*time.Second, "alert raised", func() bool {
		alerts = list(a.mustCall(200, "GET", "/api/v1/alerts", testkit.ViewerToken, nil, nil), "alerts")
		return len(alerts) == 1
	})
	if field(alerts[0], "severity") != "critical" || !strings.Contains(fmt.Sprint(field(alerts[0], "title")), "4 events dropped") {
		t.Fatalf("alert: %v", alerts[0])
	}
	id := fmt.Sprint(field(alerts[0], "id"))
	ack := a.mustCall(200, "POST", "/api/v1/alerts/"+id+"/ack", testkit.ApproverToken, map[string]string{"comment": "agent disk enlarged"}, nil)
	if ack["state"] != "acknowledged" || ack["acknowledged_by"] != "test-approver" {
		t.Fatalf("ack: %v", ack)
	}
	a.mustCall(409, "POST", "/api/v1/alerts/"+id+"/ack", testkit.ApproverToken, nil, nil)
	if n := len(list(a.mustCall(200, "GET", "/api/v1/alerts", testkit.ViewerToken, nil, nil), "alerts")); n != 0 {
		t.Fatalf("%d open alerts after ack", n)
	}
	excs := list(a.mustCall(200, "GET", "/api/v1/exceptions?kind=buffer_overflow", testkit.ViewerToken, nil, nil), "exceptions")
	if len(excs) != 1 {
		t.Fatalf("overflow exceptions: %v", excs)
	}
}

// Config problems of the pipeline are reported by LoadConfig with the
// field path, rule name, file and line.
func TestPipelineConfigErrors(t *testing.T) {
	p := testkit.NewPKI(t)
	dir := t.TempDir()
	bad := writeFile(t, dir, "item.csv", "plant,local_item,item\nDE-01,P-1,M-1\nDE-01,P-2\n")
	cfgPath := writeFile(t, dir, "hub.yaml", fmt.Sprintf(`grpc:
  listen: 127.0.0.1:0
  tls: {cert: %q, key: %q, client_ca: %q}
storage: {dir: %q}
pipeline:
  crosswalks:
    inbound: {item: %q}
  rules:
    - name: positive
      event: material.shortage
      expr: event.material_shortage.quantity.value > 0
destinations:
  - {name: erp, type: log}
`, p.Paths.HubCert, p.Paths.HubKey, p.Paths.CACert, dir, bad))
	_, err := hub.LoadConfig(cfgPath)
	for _, want := range []string{
		"pipeline.rules[0].expr: rule does not compile: rule positive: ERROR: <input>:1:40: found no matching overload for '_>_' applied to '(string, int)'",
		"pipeline.crosswalks.inbound.item: crosswalk csv: " + bad + ": line 3: wrong number of fields",
		`pipeline.workflows[4].actions[0].destination: "supplier_portal" is not declared`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("LoadConfig error lacks %q:\n%v", want, err)
		}
	}
}
