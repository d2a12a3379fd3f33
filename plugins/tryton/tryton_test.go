package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// The connector's behaviour against Tryton is tested against the real
// server in `make interop` (interop_test.go); these tests cover what needs
// no server.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFitDecimal(t *testing.T) {
	for _, tc := range []struct {
		in     string
		digits int
		mode   string
		want   string
		err    bool
	}{
		{"8.147", 2, "up", "8.15", false},
		{"8.141", 2, "up", "8.15", false},
		{"8.141", 2, "half_up", "8.14", false},
		{"8.145", 2, "half_up", "8.15", false},
		{"-8.145", 2, "half_up", "-8.15", false},
		{"8.1", 2, "refuse", "8.10", false},
		{"8.147", 2, "refuse", "", true},
		{"12", 0, "up", "12", false},
		{"0.0001", 0, "up", "1", false},
		{"1e3", 2, "up", "1000.00", false},
		{"lots", 2, "up", "", true},
	} {
		got, err := fitDecimal(tc.in, tc.digits, tc.mode)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("fitDecimal(%s, %d, %s) = %q, %v; want %q", tc.in, tc.digits, tc.mode, got, err, tc.want)
		}
	}
}

func TestParseRPCError(t *testing.T) {
	for _, tc := range []struct {
		raw       string
		want      string
		permanent bool
	}{
		{`["UserError", ["A value is required for field \"UOM\" in \"Purchase Request\".", "", null]]`,
			`tryton UserError: A value is required for field "UOM" in "Purchase Request".`, true},
		{`["UserError", ["The value is not valid.", "Check the domain.", []]]`, "tryton UserError: The value is not valid. Check the domain.", true},
		{`["ConcurrencyException", ["Records were modified in the meanwhile"]]`, "tryton ConcurrencyException: Records were modified in the meanwhile", false},
		{`["'nope'", ""]`, "tryton: 'nope'", false},
	} {
		err := parseRPCError(json.RawMessage(tc.raw))
		var re *rpcError
		if !errors.As(err, &re) || err.Error() != tc.want || re.permanent() != tc.permanent {
			t.Errorf("%s: %v (permanent %v)", tc.raw, err, re != nil && re.permanent())
		}
	}
}

func TestOutcomeClassification(t *testing.T) {
	for _, tc := range []struct {
		err       error
		want      sdk.Outcome
		uncertain bool
	}{
		{&rpcError{Kind: "UserError", Message: "x"}, sdk.OutcomePermanent, false},
		{&rpcError{Message: "'KeyError'"}, sdk.OutcomeRetryable, false},
		{errNotFound, sdk.OutcomePermanent, false},
		{errDocument, sdk.OutcomePermanent, false},
		{errLogin, sdk.OutcomeRetryable, false},
		{&transportError{err: errors.New("refused"), sent: false}, sdk.OutcomeRetryable, false},
		{&transportError{err: errors.New("timeout"), sent: true}, sdk.OutcomeRetryable, true},
	} {
		if res := outcome(tc.err); res.Outcome != tc.want || res.Uncertain != tc.uncertain {
			t.Errorf("%v: %+v", tc.err, res)
		}
	}
}

func TestDescriptionCarriesMarker(t *testing.T) {
	d := describe(requisition{Plant: "1", ProductionOrder: "PO-1001", WorkCenter: "L1", CorrelationID: "corr"}, "c17a613d")
	if !strings.HasSuffix(d, "[plantsync:c17a613d]") || !strings.Contains(d, "PO-1001") || !strings.Contains(d, "corr") {
		t.Errorf("description = %q", d)
	}
	if m := markerRE.FindStringSubmatch(d); m == nil || m[1] != "c17a613d" {
		t.Errorf("marker not found again: %v", m)
	}
}

func TestInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"database": "d", "password": "p"}, "url:"},
		{map[string]any{"url": "http://x", "password": "p"}, "database: required"},
		{map[string]any{"url": "http://x", "database": "d"}, "password: required"},
		{map[string]any{"url": "http://x", "database": "d", "password": "p", "quantity_rounding": "down"}, "quantity_rounding"},
		{map[string]any{"url": "http://x", "database": "d", "password": "p", "status_map": map[string]any{"go": "flying"}}, "status_map.go"},
		{map[string]any{"url": "http://x", "database": "d", "password": "p", "compnay": 1}, `unknown field "compnay"`},
		{map[string]any{"url": "http://x", "database": "d", "password": "p", "changes_settle": "-1m"}, "changes_settle: must not be negative"},
	} {
		_, err := New(nil).Configure(context.Background(), sdk.ConfigureRequest{Name: "erp", Config: tc.cfg})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestUnsupportedAction(t *testing.T) {
	c := New(nil)
	c.rpc, c.cfg = newClient(NewDefaultConfig()), NewDefaultConfig()
	defer c.rpc.close()
	res, err := c.Deliver(context.Background(), sdk.DeliverRequest{IdempotencyKey: "k", Action: "inventory.block", Document: json.RawMessage(`{}`)})
	if err != nil || res.Outcome != sdk.OutcomePermanent || !strings.Contains(res.Message, `unsupported action "inventory.block"`) {
		t.Errorf("res = %+v, %v", res, err)
	}
}

// The sample config stays valid (Configure itself needs a server).
func TestExampleConfig(t *testing.T) {
	raw, err := os.ReadFile("tryton.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var hub struct {
		Destinations []struct {
			Config map[string]any `yaml:"config"`
		} `yaml:"destinations"`
	}
	if err := yaml.Unmarshal(raw, &hub); err != nil || len(hub.Destinations) != 1 {
		t.Fatalf("%v %v", hub, err)
	}
	cfg := NewDefaultConfig()
	if err := (sdk.ConfigureRequest{Config: hub.Destinations[0].Config}).Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil || cfg.StatusMap["in_production"] != "running" {
		t.Errorf("%+v: %v", cfg, err)
	}
}

func TestEncodings(t *testing.T) {
	d, _ := json.Marshal(encodeDate(time.Date(2026, 12, 15, 23, 0, 0, 0, time.UTC)))
	dec, _ := json.Marshal(encodeDecimal("8.00"))
	if string(d) != `{"__class__":"date","year":2026,"month":12,"day":15}` || string(dec) != `{"__class__":"Decimal","decimal":"8.00"}` {
		t.Errorf("date %s, decimal %s", d, dec)
	}
	var back date
	if err := json.Unmarshal(d, &back); err != nil || !back.time().Equal(time.Date(2026, 12, 15, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("date back = %+v, %v", back, err)
	}
}

// A Tryton that is down when the hub starts must not keep the hub from
// starting: Configure succeeds, Health says what is wrong, deliveries fail
// retryably until the ERP answers.
func TestConfigureWithTrytonDown(t *testing.T) {
	c := New(nil)
	ctx := context.Background()
	resp, err := c.Configure(ctx, sdk.ConfigureRequest{Name: "erp", Config: map[string]any{
		"url": "http://127.0.0.1:1", "database": "plant", "user": "admin", "password": "secret", "timeout": "1s",
	}})
	if err != nil {
		t.Fatalf("configure with the ERP down: %v", err)
	}
	if len(resp.Actions) == 0 {
		t.Fatal("no actions declared")
	}
	h, err := c.Health(ctx, sdk.HealthRequest{})
	if err != nil || h.Healthy || h.Message == "" {
		t.Fatalf("health with the ERP down: %+v, %v", h, err)
	}
}
