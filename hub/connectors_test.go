package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/hub"
	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/hub/pipeline"
	"github.com/plantsync/plantsync/internal/testkit"
	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// The test binary doubles as a connector plugin (sdktest.SelfPlugin).
func TestMain(m *testing.M) {
	if sdktest.RunPluginRole(map[string]func(){"erp": func() { sdk.ServeDestination(&fileERP{}) }}) {
		return
	}
	goleak.VerifyTestMain(m)
}

// fileERP is a connector over a target kept in files: dir/docs/KEY per
// document, dir/created.log lists every creation. It refuses documents
// whose production order is refuse_order (permanently) until the file
// dir/fixed exists. It performs the actions its config lists.
type fileERP struct {
	sdk.UnimplementedDestination
	cfg fileERPConfig
}

type fileERPConfig struct {
	Dir         string   `json:"dir"`
	Actions     []string `json:"actions"`
	RefuseOrder string   `json:"refuse_order"`
}

func (f *fileERP) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ConfigureResponse, error) {
	if err := req.Decode(&f.cfg); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	if err := os.MkdirAll(filepath.Join(f.cfg.Dir, "docs"), 0o700); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	return sdk.ConfigureResponse{Actions: f.cfg.Actions, Capabilities: []sdk.Capability{sdk.CapabilityLookup}, Version: "test"}, nil
}

func (f *fileERP) Deliver(_ context.Context, req sdk.DeliverRequest) (sdk.DeliverResponse, error) {
	var d struct {
		ProductionOrder string `json:"production_order"`
	}
	if err := req.DecodeDocument(&d); err != nil {
		return sdk.Permanent("%v", err), nil
	}
	if _, err := os.Stat(filepath.Join(f.cfg.Dir, "fixed")); d.ProductionOrder == f.cfg.RefuseOrder && err != nil {
		return sdk.Permanent("production order %s is unknown", d.ProductionOrder), nil
	}
	log, err := os.OpenFile(filepath.Join(f.cfg.Dir, "created.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return sdk.DeliverResponse{}, err
	}
	_, err = fmt.Fprintf(log, "%s %s\n", req.IdempotencyKey, d.ProductionOrder)
	if cerr := log.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return sdk.DeliverResponse{}, err
	}
	if err := os.WriteFile(filepath.Join(f.cfg.Dir, "docs", req.IdempotencyKey), req.Document, 0o600); err != nil {
		return sdk.DeliverResponse{}, err
	}
	return sdk.OK("ERP-" + req.IdempotencyKey[:8]), nil
}

func (f *fileERP) Lookup(_ context.Context, req sdk.LookupRequest) (sdk.LookupResponse, error) {
	if _, err := os.Stat(filepath.Join(f.cfg.Dir, "docs", req.IdempotencyKey)); err == nil {
		return sdk.LookupResponse{Status: sdk.LookupFound, ExternalRef: "ERP-" + req.IdempotencyKey[:8]}, nil
	}
	return sdk.LookupResponse{Status: sdk.LookupNotFound}, nil
}

var erpActions = []any{"purchase_requisition.create", "production_order.confirm", "production_order.update_status",
	"production_order.reschedule", "purchase_order.update_promise", "inventory.block"}

// pluginConfig is a hub config whose erp destination is the test binary
// serving fileERP.
func pluginConfig(t *testing.T, actions []any, refuse string) (hub.Config, string) {
	t.Helper()
	path, sum := sdktest.SelfPlugin(t, "erp")
	target := t.TempDir()
	cfg := testkit.HubConfig(t, testkit.NewPKI(t), t.TempDir())
	cfg.Plugins = []hub.Plugin{{Name: "files", Path: path, SHA256: sum}}
	cfg.Destinations[0] = hub.Destination{Name: "erp", Type: hub.DestinationPlugin, Plugin: "files",
		Config: map[string]any{"dir": target, "actions": actions, "refuse_order": refuse}}
	cfg.Destinations[0].Delivery.BackoffInitial = 20 * time.Millisecond
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("config: %v", errs)
	}
	return cfg, target
}

// validate checks the workflows against what each connector answered to
// Configure; a workflow routing an action the plugin does not perform is
// refused by validate and by run.
func TestCheckPluginsRefusesUnsupportedActions(t *testing.T) {
	cfg, _ := pluginConfig(t, []any{"production_order.confirm"}, "")
	errs := hub.CheckPlugins(context.Background(), cfg, nil)
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{
		"destination: erp (type plugin) does not perform purchase_requisition.create; it performs production_order.confirm",
		"destination: erp (type plugin) does not perform inventory.block",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("CheckPlugins lacks %q; got:\n%s", want, all)
		}
	}
	h := hub.New(cfg, nil)
	err := h.Start(context.Background())
	_ = h.Shutdown(context.Background())
	if !errors.Is(err, pipeline.ErrConfig) || !strings.Contains(err.Error(), "does not perform purchase_requisition.create") {
		t.Errorf("Start: %v; want the workflow refused", err)
	}

	cfg, _ = pluginConfig(t, erpActions, "")
	if errs := hub.CheckPlugins(context.Background(), cfg, nil); len(errs) > 0 {
		t.Errorf("every shipped ERP action declared, still refused: %v", errs)
	}
	cfg.Plugins[0].SHA256 = strings.Repeat("0", 64)
	errs = hub.CheckPlugins(context.Background(), cfg, nil)
	if len(errs) != 1 || !errors.Is(errs[0], sdk.ErrChecksumMismatch) || !strings.Contains(errs[0].Error(), "expected sha256 "+strings.Repeat("0", 64)+", actual ") {
		t.Errorf("wrong checksum: %v", errs)
	}
}

// The whole hub with a plugin destination: completions become
// confirmations delivered through the plugin process; a refused one is
// parked as a delivery exception and holds back its order's later
// confirmation; after the target is fixed, a replay delivers both in
// order, once; pressing replay again changes nothing.
func TestHubDeliversThroughPluginAndReplaysParked(t *testing.T) {
	cfg, target := pluginConfig(t, erpActions, "PO-BAD")
	h := hub.New(cfg, nil)
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	b := &journal.Batch{Producer: "agent:a1", Epoch: "e1"}
	for i, order := range []string{"PO-1", "PO-BAD", "PO-1", "PO-BAD"} {
		ev := &pb.Event{Id: fmt.Sprintf("ev-%d", i), Plant: "DE-01", Type: "production.completion", SchemaVersion: 1,
			CorrelationId: fmt.Sprintf("corr-%d", i), OccurredAt: timestamppb.Now(), ObservedAt: timestamppb.Now(),
			Source: &pb.Source{Name: "mes", Kind: "mqtt", Uri: "mqtt://mes"},
			Payload: &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{
				Order: order, Item: "P-4711", WorkCenter: "L1-M1", Good: &pb.Quantity{Value: "1", Unit: "EA"}}}}
		raw, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		b.Events = append(b.Events, journal.Incoming{Sequence: uint64(i + 1), ID: ev.Id, Raw: raw})
	}
	b.LastSequence = 4
	if _, err := h.Journal().Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	ob := h.Pipeline().Outbox()
	list := func(state outbox.State) []outbox.Entry {
		es, err := ob.List(outbox.Query{Destination: "erp", State: state, Ascending: true, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	testkit.Eventually(t, 10*time.Second, "PO-1 delivered, PO-BAD parked", func() bool {
		return len(list(outbox.StateDelivered)) == 2 && len(list(outbox.StateFailed)) == 1
	})
	testkit.Eventually(t, 5*time.Second, "the second PO-BAD held back", func() bool {
		st := h.DeliveryStatus()
		return len(st) == 1 && len(st[0].HeldBack) == 1 && st[0].HeldBack[0].Waiting == 1
	})
	if n := len(list(outbox.StatePending)); n != 1 {
		t.Fatalf("%d pending; want the held-back PO-BAD", n)
	}
	// The same state on the API, for the operator who has to act on it.
	resp, err := testkit.TokenClient(testkit.ViewerToken).Get(h.URL() + "/api/v1/delivery")
	if err != nil {
		t.Fatal(err)
	}
	var ds struct {
		Destinations []struct {
			Destination string `json:"destination"`
			Breaker     string `json:"breaker"`
			HeldBack    []struct {
				OrderingKey string `json:"ordering_key"`
				Waiting     int    `json:"waiting"`
			} `json:"held_back"`
		} `json:"destinations"`
	}
	err = json.NewDecoder(resp.Body).Decode(&ds)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(ds.Destinations) != 1 || ds.Destinations[0].Destination != "erp" ||
		len(ds.Destinations[0].HeldBack) != 1 || ds.Destinations[0].HeldBack[0].Waiting != 1 {
		t.Fatalf("GET /api/v1/delivery: %d %+v %v", resp.StatusCode, ds, err)
	}
	excs, err := h.Pipeline().Exceptions().List(exceptions.Filter{Kind: exceptions.KindDelivery})
	if err != nil || len(excs) != 1 || !strings.Contains(excs[0].Reason, "production order PO-BAD is unknown") {
		t.Fatalf("delivery exceptions %+v, %v", excs, err)
	}

	if err := os.WriteFile(filepath.Join(target, "fixed"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := h.Pipeline().Replay([]uint64{excs[0].ID}, "test")
	if err != nil || res[0].Outcome != pipeline.ReplayResolved {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	testkit.Eventually(t, 10*time.Second, "all four delivered", func() bool {
		return len(list(outbox.StateDelivered)) == 4 && ob.Depth("erp") == 0
	})
	res, err = h.Pipeline().Replay([]uint64{excs[0].ID}, "test")
	if err != nil || res[0].Outcome != pipeline.ReplayAlreadyResolved {
		t.Fatalf("second replay: %+v, %v", res, err)
	}
	raw, err := os.ReadFile(filepath.Join(target, "created.log"))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		k, _, _ := strings.Cut(line, " ")
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) != 4 || len(slices.Compact(keys)) != 4 {
		t.Errorf("created %v; want four documents, one per key", raw)
	}
	var bad []string
	for _, e := range list(outbox.StateDelivered) {
		var d pipeline.ProductionConfirmation
		if err := json.Unmarshal(e.Document, &d); err != nil {
			t.Fatal(err)
		}
		if e.ExternalRef != "ERP-"+e.IdempotencyKey[:8] {
			t.Errorf("entry %d ref %q", e.Seq, e.ExternalRef)
		}
		if d.ProductionOrder == "PO-BAD" {
			bad = append(bad, e.IdempotencyKey)
		}
	}
	// PO-BAD's confirmations reached the target in outbox order.
	var createdBad []string
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if k, o, _ := strings.Cut(line, " "); o == "PO-BAD" {
			createdBad = append(createdBad, k)
		}
	}
	if !slices.Equal(bad, createdBad) {
		t.Errorf("PO-BAD created in order %v; outbox order %v", createdBad, bad)
	}
}

// Discarding a parked delivery frees its ordering key without replaying it:
// the discarded entry stays failed (it never leaves), the one behind it is
// attempted. Discarding needs the admin role and a comment.
func TestDiscardParkedDeliveryFreesItsKey(t *testing.T) {
	cfg, _ := pluginConfig(t, erpActions, "PO-BAD")
	h := hub.New(cfg, nil)
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	b := &journal.Batch{Producer: "agent:a1", Epoch: "e1", LastSequence: 2}
	for i := range 2 {
		ev := &pb.Event{Id: fmt.Sprintf("ev-%d", i), Plant: "DE-01", Type: "production.completion", SchemaVersion: 1,
			CorrelationId: fmt.Sprintf("corr-%d", i), OccurredAt: timestamppb.Now(), ObservedAt: timestamppb.Now(),
			Source: &pb.Source{Name: "mes", Kind: "mqtt", Uri: "mqtt://mes"},
			Payload: &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{
				Order: "PO-BAD", Item: "P-4711", WorkCenter: "L1-M1", Good: &pb.Quantity{Value: "1", Unit: "EA"}}}}
		raw, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		b.Events = append(b.Events, journal.Incoming{Sequence: uint64(i + 1), ID: ev.Id, Raw: raw})
	}
	if _, err := h.Journal().Commit(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	open := func() []*exceptions.Exception {
		es, err := h.Pipeline().Exceptions().List(exceptions.Filter{Kind: exceptions.KindDelivery, State: "open"})
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	testkit.Eventually(t, 10*time.Second, "first PO-BAD parked, second held back", func() bool {
		st := h.DeliveryStatus()
		return len(open()) == 1 && len(st) == 1 && len(st[0].HeldBack) == 1
	})
	first := open()[0]
	post := func(token, body string) int {
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/api/v1/exceptions/%d/discard", h.URL(), first.ID), strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := testkit.TokenClient(token).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(testkit.ViewerToken, `{"comment":"x"}`); code != http.StatusForbidden {
		t.Fatalf("viewer discard: %d, want 403", code)
	}
	if code := post(testkit.AdminToken, `{}`); code != http.StatusBadRequest {
		t.Fatalf("discard without comment: %d, want 400", code)
	}
	if code := post(testkit.AdminToken, `{"comment":"order cancelled in ERP"}`); code != http.StatusOK {
		t.Fatalf("discard: %d, want 200", code)
	}
	// The entry behind it is now attempted (and parked in its turn: the
	// target refuses PO-BAD); the discarded one stays failed.
	testkit.Eventually(t, 10*time.Second, "the held-back entry attempted", func() bool {
		es := open()
		return len(es) == 1 && es[0].ID != first.ID
	})
	got, err := h.Pipeline().Exceptions().Get(first.ID)
	if err != nil || got.State != exceptions.StateResolved || !strings.Contains(got.Resolution, "order cancelled in ERP") || got.ResolvedBy == "" {
		t.Fatalf("discarded exception: %+v, %v", got, err)
	}
	e, err := h.Pipeline().Outbox().Get("erp", first.Delivery.Seq)
	if err != nil || e.State != outbox.StateFailed {
		t.Fatalf("discarded entry state %q, %v; want failed", e.State, err)
	}
}
