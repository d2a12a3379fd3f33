package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/internal/failpoint"
	"github.com/plantsync/plantsync/internal/testkit"
	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/sim/sandboxerp"
)

// deliveryBinaries are the failpoints hub and the webhook connector plugin.
func deliveryBinaries(t testing.TB) (hubBin, webhookBin string) {
	return failpointHubBinary(t), goBinary(t, "webhook/webhook", "github.com/plantsync/plantsync/plugins/webhook")
}

// erpActions are the actions the shipped workflows route to erp.
var erpActions = []string{"purchase_requisition.create", "production_order.confirm", "production_order.update_status",
	"production_order.reschedule", "purchase_order.update_promise", "inventory.block"}

// The crash test for delivery, with real processes: an agent
// sends 200 production completions (100 orders), the hub delivers the
// confirmations through the webhook plugin process to the sandbox ERP,
// and is SIGKILLed by the failpoint between a Deliver returning and its
// outcome being recorded. Restarted, it looks up what may have arrived
// instead of sending it again: the ERP holds exactly one document per
// idempotency key, and no key was ever POSTed twice.
func TestHubKilledBetweenDeliverAndRecordDeliversOnce(t *testing.T) {
	const events = 200
	hubBin, webhookBin := deliveryBinaries(t)
	sum, err := sdk.FileSHA256(webhookBin)
	if err != nil {
		t.Fatal(err)
	}
	p := testkit.NewPKI(t)
	dir := t.TempDir()

	erp, err := sandboxerp.New(sandboxerp.Config{Listen: "127.0.0.1:0", Dir: filepath.Join(dir, "erp")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := erp.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// t.Context() is cancelled before cleanups run: shut down unhurried.
	t.Cleanup(func() { _ = erp.Shutdown(context.Background()) })

	h := &hubProc{GRPC: testkit.FreePort(t), HTTP: testkit.FreePort(t), Dir: filepath.Join(dir, "hub")}
	if err := os.MkdirAll(h.Dir, 0o700); err != nil {
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
		"plugins": []map[string]any{{"name": "webhook", "path": webhookBin, "sha256": sum}},
		"destinations": []map[string]any{
			{"name": "erp", "type": "plugin", "plugin": "webhook",
				"config":   map[string]any{"url": erp.URL() + "/webhook", "lookup_url": erp.URL() + "/documents/by-key/{key}", "actions": erpActions},
				"delivery": map[string]any{"backoff_initial": "50ms", "backoff_max": "500ms"}},
			{"name": "supplier_portal", "type": "log"},
			{"name": "planning", "type": "log"},
			{"name": "reporting", "type": "log"},
		},
	})
	h.proc = newProc(t, "plantsync-hub", hubBin, "run", "-config", cfgPath)

	// The child inherits the variable; the agent's binary has no
	// failpoints compiled in.
	t.Setenv(failpoint.EnvVar, "hub/delivery/after-deliver=kill@40")
	h.Start()
	ag := newAgentProc(t, p, agentOptions{ID: "agent-1", Plant: "DE-01", StateDir: filepath.Join(dir, "agent"), Hub: h.GRPC, Generator: events})
	ag.Start()
	code, out := h.Wait(60 * time.Second)
	cmd, _ := h.current()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("hub exited with %d, not by the failpoint's SIGKILL:\n%s", code, out)
	}
	before, err := erp.Documents("", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(before) < 40 {
		t.Fatalf("the ERP holds %d documents when the hub was killed after its 40th delivery", len(before))
	}

	t.Setenv(failpoint.EnvVar, "")
	h.Start()
	var entries []outboxEntry
	waitFor(t, h.proc, 60*time.Second, "every confirmation delivered", func() error {
		var page struct {
			Depth   int           `json:"depth"`
			Entries []outboxEntry `json:"entries"`
		}
		if err := fetchJSON(h.URL()+"/api/v1/outbox/erp?state=delivered&after=0&limit=1000", testkit.ViewerToken, &page); err != nil {
			return err
		}
		if len(page.Entries) != events || page.Depth != 0 {
			return fmt.Errorf("%d delivered, %d pending", len(page.Entries), page.Depth)
		}
		entries = page.Entries
		return nil
	})

	docs, err := erp.Documents("", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]sandboxerp.Document{}
	for _, d := range docs {
		if d.Deliveries != 1 {
			t.Errorf("document %s (key %s) was POSTed %d times; the restarted hub must look it up instead", d.ID, d.IdempotencyKey, d.Deliveries)
		}
		if _, dup := byKey[d.IdempotencyKey]; dup {
			t.Errorf("two documents for key %s", d.IdempotencyKey)
		}
		byKey[d.IdempotencyKey] = d
	}
	if len(docs) != events {
		t.Errorf("the ERP holds %d documents; want %d, one per event", len(docs), events)
	}
	for _, e := range entries {
		d, ok := byKey[e.IdempotencyKey]
		if !ok {
			t.Errorf("entry %d (key %s) delivered but not at the ERP", e.Seq, e.IdempotencyKey)
			continue
		}
		if e.ExternalRef != d.ID || e.Action != "production_order.confirm" {
			t.Errorf("entry %d: action %s, external ref %q; want %q", e.Seq, e.Action, e.ExternalRef, d.ID)
		}
	}
	found, err := hubMetric(h, `plantsync_hub_delivery_lookups_total{destination="erp",result="found"}`)
	if err != nil || found < 1 {
		t.Errorf("lookups found: %v, %v; the delivery in flight at the kill must have been looked up", found, err)
	}
	ag.Stop(20 * time.Second)
	h.Stop(20 * time.Second)
}

// outboxEntry is one element of GET /api/v1/outbox/{destination}.
type outboxEntry struct {
	Seq            uint64 `json:"seq"`
	IdempotencyKey string `json:"idempotency_key"`
	Action         string `json:"action"`
	ExternalRef    string `json:"external_ref"`
}

// hubMetric reads one sample of the hub's /metrics by its full name with
// labels.
func hubMetric(h *hubProc, name string) (float64, error) {
	resp, err := httpClient.Get(h.URL() + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				return 0, fmt.Errorf("metric %s: %q: %w", name, v, err)
			}
			return f, nil
		}
	}
	return 0, errors.New("metric " + name + " not exposed")
}
