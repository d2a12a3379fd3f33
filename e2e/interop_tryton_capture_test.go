//go:build interop && linux

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/hub/capture"
	"github.com/plantsync/plantsync/internal/failpoint"
	"github.com/plantsync/plantsync/internal/testkit"
	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/sim/sandboxerp"
)

// ERP change capture against a real Tryton 6.0 (scripts/peers/tryton.sh):
// the hub polls Tryton through the real tryton plugin process, journals
// what a buyer did, and the workflows deliver it onward through the real
// webhook plugin process.

// trytonRPC is a small JSON-RPC client acting as the buyer in Tryton.
type trytonRPC struct {
	t    *testing.T
	url  string
	auth string
	id   int
}

func (c *trytonRPC) post(method string, params []any, out any) error {
	c.id++
	body, _ := json.Marshal(map[string]any{"id": c.id, "method": method, "params": params})
	req, err := http.NewRequest(http.MethodPost, c.url+"/plantsync/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %.200s", method, resp.StatusCode, raw)
	}
	var env struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	if len(env.Error) > 0 && string(env.Error) != "null" {
		return fmt.Errorf("%s: %s", method, env.Error)
	}
	if out != nil {
		return json.Unmarshal(env.Result, out)
	}
	return nil
}

func (c *trytonRPC) call(method string, params []any, out any) {
	c.t.Helper()
	if err := c.post(method, params, out); err != nil {
		c.t.Fatal(err)
	}
}

var tctx = map[string]any{"company": 1}

func (c *trytonRPC) one(model string, domain []any) int {
	c.t.Helper()
	var rows []struct {
		ID int `json:"id"`
	}
	c.call("model."+model+".search_read", []any{domain, 0, 2, nil, []string{"id"}, tctx}, &rows)
	if len(rows) != 1 {
		c.t.Fatalf("%s %v: %d rows", model, domain, len(rows))
	}
	return rows[0].ID
}

// startTrytonPeer copies the seed and starts trytond on 127.0.0.1; it
// returns the server URL, the password file and a logged-in client.
func startTrytonPeer(t *testing.T) (string, string, *trytonRPC) {
	t.Helper()
	trytond, seed := os.Getenv("PLANTSYNC_TRYTOND"), os.Getenv("PLANTSYNC_TRYTON_SEED")
	if trytond == "" || seed == "" {
		t.Fatal("PLANTSYNC_TRYTOND and PLANTSYNC_TRYTON_SEED are not set; run `make interop` (scripts/peers/tryton.sh)")
	}
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(seed, "plantsync.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plantsync.sqlite"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	passFile := filepath.Join(seed, "admin.pass")
	pass, err := os.ReadFile(passFile)
	if err != nil {
		t.Fatal(err)
	}
	port := testkit.FreePort(t)
	conf := fmt.Sprintf("[database]\nuri = sqlite://\npath = %s\n[web]\nlisten = %s\n", dir, port)
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
	})
	c := &trytonRPC{t: t, url: "http://" + port}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var res []json.RawMessage
		err := c.post("common.db.login", []any{"admin", map[string]any{"password": strings.TrimSpace(string(pass))}, "en"}, &res)
		if err == nil && len(res) == 2 {
			var uid int
			var session string
			_ = json.Unmarshal(res[0], &uid)
			_ = json.Unmarshal(res[1], &session)
			c.auth = "Session " + base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("admin:%d:%s", uid, session)))
			return c.url, "file:" + passFile, c
		}
		if time.Now().After(deadline) {
			t.Fatalf("trytond did not answer on %s: %v", c.url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// confirmPurchase creates and confirms a purchase as a buyer would and
// returns its id and number.
func (c *trytonRPC) confirmPurchase(code string, qty float64) (int, string) {
	c.t.Helper()
	party := c.one("party.party", []any{[]any{"name", "=", "Acme Supplies"}})
	product := c.one("product.product", []any{[]any{"code", "=", code}})
	var prow []struct {
		UOM int `json:"purchase_uom"`
	}
	c.call("model.product.product.read", []any{[]int{product}, []string{"purchase_uom"}, tctx}, &prow)
	var addr []int
	c.call("model.party.address.search", []any{[]any{[]any{"party", "=", party}}, 0, 1, nil, tctx}, &addr)
	if len(addr) == 0 {
		c.call("model.party.address.create", []any{[]any{map[string]any{"party": party, "street": "1 Supply Road"}}, tctx}, &addr)
	}
	var ids []int
	c.call("model.purchase.purchase.create", []any{[]any{map[string]any{"party": party, "company": 1, "invoice_address": addr[0], "reference": "BUYER",
		"lines": []any{[]any{"create", []any{map[string]any{"product": product, "quantity": qty, "unit": prow[0].UOM,
			"unit_price": map[string]any{"__class__": "Decimal", "decimal": "8.00"}, "description": "material"}}}}}}, tctx}, &ids)
	c.call("model.purchase.purchase.quote", []any{ids, tctx}, nil)
	c.call("model.purchase.purchase.confirm", []any{ids, tctx}, nil)
	var rows []struct {
		State  string `json:"state"`
		Number string `json:"number"`
	}
	c.call("model.purchase.purchase.read", []any{ids, []string{"state", "number"}, tctx}, &rows)
	if rows[0].State != "processing" {
		c.t.Fatalf("purchase %d is %s after confirm, want processing", ids[0], rows[0].State)
	}
	return ids[0], rows[0].Number
}

// receive posts an incoming shipment of the purchase's moves.
func (c *trytonRPC) receive(purchase int) int {
	c.t.Helper()
	var moves []int
	c.call("model.stock.move.search", []any{[]any{[]any{"purchase", "=", purchase}}, 0, nil, nil, tctx}, &moves)
	if len(moves) == 0 {
		c.t.Fatalf("purchase %d has no moves", purchase)
	}
	party := c.one("party.party", []any{[]any{"name", "=", "Acme Supplies"}})
	wh := c.one("stock.location", []any{[]any{"type", "=", "warehouse"}, []any{"code", "=", "WH"}})
	var sh []int
	c.call("model.stock.shipment.in.create", []any{[]any{map[string]any{"supplier": party, "warehouse": wh, "company": 1,
		"incoming_moves": []any{[]any{"add", moves}}}}, tctx}, &sh)
	c.call("model.stock.shipment.in.receive", []any{sh, tctx}, nil)
	c.call("model.stock.shipment.in.done", []any{sh, tctx}, nil)
	return sh[0]
}

func trytonPluginBinary(t *testing.T) string {
	return goBinary(t, "tryton-plugin/tryton", "github.com/plantsync/plantsync/plugins/tryton")
}

func eventsOfType(t *testing.T, h *hubProc, typ string) []hubEvent {
	t.Helper()
	evs, err := hubEvents(h, "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	var out []hubEvent
	for _, e := range evs {
		if e.Event.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// The interop test for change capture: a purchase confirmed in
// Tryton through its API appears at the hub as one po.approved and reaches
// the supplier portal (webhook target) exactly once, although the hub is
// SIGKILLed between journaling it and storing the cursor; a shipment
// received in Tryton appears as goods.receipt; a supplier confirmation
// posted to the ingestion API updates the Tryton purchase and does not
// come back as a second po.approved.
func TestInteropTrytonCaptureToWebhookAcrossCrash(t *testing.T) {
	trytonURL, passRef, buyer := startTrytonPeer(t)
	hubBin, webhookBin := deliveryBinaries(t)
	trytonBin := trytonPluginBinary(t)
	webhookSum, err := sdk.FileSHA256(webhookBin)
	if err != nil {
		t.Fatal(err)
	}
	trytonSum, err := sdk.FileSHA256(trytonBin)
	if err != nil {
		t.Fatal(err)
	}
	p := testkit.NewPKI(t)
	dir := t.TempDir()
	portal, err := sandboxerp.New(sandboxerp.Config{Listen: "127.0.0.1:0", Dir: filepath.Join(dir, "portal")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := portal.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = portal.Shutdown(context.Background()) })

	const token = "pst_e2e_partner_acme_token_02"
	h := &hubProc{GRPC: testkit.FreePort(t), HTTP: testkit.FreePort(t), Dir: filepath.Join(dir, "hub")}
	if err := os.MkdirAll(h.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(h.Dir, "acme.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(h.Dir, "hub.yaml")
	writeYAML(t, cfgPath, map[string]any{
		"grpc": map[string]any{"listen": h.GRPC,
			"tls": map[string]string{"cert": p.Paths.HubCert, "key": p.Paths.HubKey, "client_ca": p.Paths.CACert}},
		"http":    map[string]any{"listen": h.HTTP, "auth": map[string]string{"tokens_file": testkit.TokensFile(t, h.Dir)}},
		"storage": map[string]any{"dir": filepath.Join(h.Dir, "storage")},
		"pki":     map[string]any{"dir": p.Dir},
		"log":     map[string]string{"level": "info", "format": "json"},
		"plugins": []map[string]any{{"name": "webhook", "path": webhookBin, "sha256": webhookSum}, {"name": "tryton", "path": trytonBin, "sha256": trytonSum}},
		"destinations": []map[string]any{
			{"name": "erp", "type": "plugin", "plugin": "tryton",
				"config":   map[string]any{"url": trytonURL, "database": "plantsync", "password": passRef},
				"delivery": map[string]any{"backoff_initial": "50ms", "backoff_max": "500ms"},
				"changes":  map[string]any{"poll_interval": "200ms", "plant": "DE-01"}},
			{"name": "supplier_portal", "type": "plugin", "plugin": "webhook",
				"config": map[string]any{"url": portal.URL() + "/webhook", "lookup_url": portal.URL() + "/documents/by-key/{key}",
					"actions": []string{"purchase_order.publish"}},
				"delivery": map[string]any{"backoff_initial": "50ms", "backoff_max": "500ms"}},
			{"name": "planning", "type": "log"},
			{"name": "reporting", "type": "log"},
		},
		// The workflows of the four flows this test walks (the shipped
		// defaults also route actions Tryton does not perform).
		"pipeline": map[string]any{"workflows": []map[string]any{
			{"event": "po.approved", "actions": []map[string]string{
				{"action": "purchase_order.publish", "destination": "supplier_portal"}, {"action": "supply.update", "destination": "planning"}}},
			{"event": "supplier.confirmation", "actions": []map[string]string{
				{"action": "purchase_order.update_promise", "destination": "erp"}, {"action": "supply.update", "destination": "planning"}}},
			{"event": "goods.receipt", "actions": []map[string]string{
				{"action": "inventory.update", "destination": "planning"}, {"action": "receipt.record", "destination": "reporting"}}},
		}},
		"partners": []map[string]any{{"name": "acme", "types": []string{"supplier.confirmation"}, "plants": []string{"DE-01"},
			"auth": map[string]string{"token_file": tokenFile}}},
	})
	h.proc = newProc(t, "plantsync-hub", hubBin, "run", "-config", cfgPath)

	// Killed right after the first captured events are journaled, before
	// the cursor after them is stored.
	t.Setenv(failpoint.EnvVar, capture.FailpointAfterJournal+"=kill@1")
	h.Start()
	po, number := buyer.confirmPurchase("200201", 12.5)
	code, out := h.Wait(60 * time.Second)
	cmd, _ := h.current()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("hub exited with %d, not by the failpoint's SIGKILL:\n%s", code, out)
	}

	t.Setenv(failpoint.EnvVar, "")
	h.Start()
	waitFor(t, h.proc, 60*time.Second, "po.approved delivered to the supplier portal", func() error {
		docs, err := portal.Documents("purchase_order.publish", time.Time{})
		if err != nil {
			return err
		}
		if len(docs) == 0 {
			return fmt.Errorf("no purchase_order.publish at the portal yet")
		}
		return nil
	})
	// The repeated page after the restart was read again and dropped as
	// a duplicate.
	waitFor(t, h.proc, 30*time.Second, "the repeated page counted as duplicate", func() error {
		v, err := hubMetric(h, `plantsync_hub_capture_events_total{destination="erp",status="duplicate"}`)
		if err != nil || v < 1 {
			return fmt.Errorf("duplicates %v, %v", v, err)
		}
		return nil
	})
	approved := eventsOfType(t, h, "po.approved")
	want := capture.EventID("erp", fmt.Sprintf("purchase.purchase,%d:approved", po), "")
	if len(approved) != 1 || approved[0].Event.ID != want || approved[0].Producer != "erp:erp" || approved[0].Event.Plant != "DE-01" {
		t.Fatalf("po.approved events = %+v; want exactly one, id %s from erp:erp", approved, want)
	}

	shipment := buyer.receive(po)
	waitFor(t, h.proc, 30*time.Second, "goods.receipt journaled", func() error {
		if n := len(eventsOfType(t, h, "goods.receipt")); n != 1 {
			return fmt.Errorf("%d goods.receipt events", n)
		}
		return nil
	})
	gr := eventsOfType(t, h, "goods.receipt")[0]
	if gr.Event.Attributes["erp_document"] != fmt.Sprintf("stock.shipment.in,%d", shipment) {
		t.Errorf("goods.receipt attributes = %v", gr.Event.Attributes)
	}

	// The supplier confirms a later date through the ingestion API; the
	// hub writes it onto the Tryton purchase line.
	body := []byte(fmt.Sprintf(`{"id": "CONF-%s-1", "type": "supplier.confirmation", "plant": "DE-01", "occurred_at": "2026-11-27T10:00:00Z",
  "supplier_confirmation": {"purchase_order": %q, "lines": [{"line": "1", "item": "200201", "quantity": {"value": "12.5", "unit": "kg"}, "promised_date": "2026-12-09T00:00:00Z"}]}}`, number, number))
	if code, a, err := postPartner(h, token, body); err != nil || code != http.StatusOK || a.Results[0].Status != "accepted" {
		t.Fatalf("supplier confirmation: %d %+v %v", code, a, err)
	}
	waitFor(t, h.proc, 60*time.Second, "the promised date written to the Tryton purchase line", func() error {
		// Once received, Tryton shows the moves' date as delivery_date;
		// the promise sits in the edited delivery date.
		var lines []struct {
			Delivery *struct {
				Year, Month, Day int
			} `json:"delivery_date_store"`
		}
		if err := buyer.post("model.purchase.line.search_read", []any{[]any{[]any{"purchase", "=", po}}, 0, nil, nil,
			[]string{"delivery_date_store"}, tctx}, &lines); err != nil {
			return err
		}
		if len(lines) != 1 || lines[0].Delivery == nil || lines[0].Delivery.Day != 9 || lines[0].Delivery.Month != 12 {
			raw, _ := json.Marshal(lines)
			return fmt.Errorf("purchase lines %s", raw)
		}
		return nil
	})
	// Several polls later there is still exactly one po.approved, and the
	// portal got the order exactly once.
	polls, err := hubMetric(h, `plantsync_hub_capture_polls_total{destination="erp"}`)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, h.proc, 30*time.Second, "three more polls", func() error {
		v, err := hubMetric(h, `plantsync_hub_capture_polls_total{destination="erp"}`)
		if err != nil || v < polls+3 {
			return fmt.Errorf("polls %v", v)
		}
		return nil
	})
	if approved := eventsOfType(t, h, "po.approved"); len(approved) != 1 {
		t.Errorf("after the promise update: %d po.approved events, want 1", len(approved))
	}
	docs, err := portal.Documents("purchase_order.publish", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 || docs[0].Deliveries != 1 {
		t.Errorf("the portal holds %+v; want one purchase_order.publish, POSTed once", docs)
	}
	h.Stop(20 * time.Second)
}
