package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/hub/capture"
	"github.com/plantsync/plantsync/internal/failpoint"
	"github.com/plantsync/plantsync/internal/testkit"
	"github.com/plantsync/plantsync/plugins/sdk"
)

// fakeERPBinary builds e2e/testdata/fakeerp, a connector whose changes
// come from a file.
func fakeERPBinary(t *testing.T) string {
	return goBinary(t, "fakeerp/fakeerp", "github.com/plantsync/plantsync/e2e/testdata/fakeerp")
}

// The crash test of change capture with real processes: the hub journals
// the first page of an ERP's changes and is SIGKILLed by the failpoint
// before it stores the cursor after that page. Restarted, it reads the
// page again: the journal drops its events as duplicates, the second page
// is journaled, and every change is in the journal exactly once.
func TestHubKilledBetweenJournalAndCursorCapturesOnce(t *testing.T) {
	hubBin := failpointHubBinary(t)
	fakeBin := fakeERPBinary(t)
	sum, err := sdk.FileSHA256(fakeBin)
	if err != nil {
		t.Fatal(err)
	}
	p := testkit.NewPKI(t)
	dir := t.TempDir()
	changes := []sdk.Change{}
	var want []string
	for i := 1; i <= 3; i++ {
		doc, _ := json.Marshal(capture.Document{Document: fmt.Sprintf("purchase.purchase,%d", i), Number: fmt.Sprintf("P%04d", i), Supplier: "SUP-7",
			Lines: []capture.Line{{Line: "1", Ref: fmt.Sprintf("purchase.line,%d", i), Item: "200201", Quantity: "5", Unit: "kg"}}})
		c := sdk.Change{ID: fmt.Sprintf("purchase.purchase,%d:approved", i), Kind: capture.KindPOApproved, ExternalRef: fmt.Sprintf("purchase.purchase,%d", i),
			ChangedAt: time.Date(2026, 11, 27, 10, i, 0, 0, time.UTC), Document: doc}
		changes = append(changes, c)
		want = append(want, capture.EventID("erp", c.ID, ""))
	}
	changesFile := filepath.Join(dir, "changes.json")
	raw, _ := json.Marshal(changes)
	if err := os.WriteFile(changesFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}

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
		"plugins": []map[string]any{{"name": "fakeerp", "path": fakeBin, "sha256": sum}},
		"destinations": []map[string]any{
			{"name": "erp", "type": "plugin", "plugin": "fakeerp",
				"config":  map[string]any{"changes_file": changesFile, "actions": erpActions},
				"changes": map[string]any{"poll_interval": "100ms", "page_size": 2, "plant": "DE-01"}},
			{"name": "supplier_portal", "type": "log"},
			{"name": "planning", "type": "log"},
			{"name": "reporting", "type": "log"},
		},
	})
	h.proc = newProc(t, "plantsync-hub", hubBin, "run", "-config", cfgPath)
	t.Setenv(failpoint.EnvVar, capture.FailpointAfterJournal+"=kill@1")
	// This run dies at the failpoint, possibly before it ever answers a
	// health check (the first poll comes 100 ms after start): start the
	// bare process and wait for its death.
	h.proc.Start()
	code, out := h.Wait(30 * time.Second)
	cmd, _ := h.current()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("hub exited with %d, not by the failpoint's SIGKILL:\n%s", code, out)
	}

	t.Setenv(failpoint.EnvVar, "")
	h.Start()
	var got []hubEvent
	waitFor(t, h.proc, 30*time.Second, "all three changes journaled", func() error {
		evs, err := hubEvents(h, "/api/v1/events")
		if err != nil {
			return err
		}
		got = got[:0]
		for _, e := range evs {
			if e.Producer == "erp:erp" {
				got = append(got, e)
			}
		}
		if len(got) < 3 {
			return fmt.Errorf("%d events from erp:erp", len(got))
		}
		return nil
	})
	if len(got) != 3 {
		t.Fatalf("%d events from erp:erp, want 3: %+v", len(got), got)
	}
	for i, e := range got {
		if e.Event.ID != want[i] || e.Event.Type != "po.approved" || e.Event.Plant != "DE-01" {
			t.Errorf("event %d = %+v, want id %s", i, e.Event, want[i])
		}
	}
	dups, err := hubMetric(h, `plantsync_hub_capture_events_total{destination="erp",status="duplicate"}`)
	if err != nil || dups != 2 {
		t.Errorf("duplicates after the restart: %v, %v; want the first page's 2 events", dups, err)
	}
	h.Stop(20 * time.Second)
}
