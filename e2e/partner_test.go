package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/hub/partner"
	"github.com/plantsync/plantsync/internal/failpoint"
	"github.com/plantsync/plantsync/internal/testkit"
)

// failpointHubBinary is plantsync-hub built with -tags failpoints.
func failpointHubBinary(t testing.TB) string {
	return goBinary(t, "failpoints/plantsync-hub", "github.com/plantsync/plantsync/hub/cmd/plantsync-hub", "failpoints")
}

// addPartner adds a partner "acme" with a bearer token to the config
// newHubProc wrote.
func addPartner(t *testing.T, h *hubProc, token string) {
	t.Helper()
	cfgPath := filepath.Join(h.Dir, "hub.yaml")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(h.Dir, "acme.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg["partners"] = []map[string]any{{
		"name": "acme", "types": []string{"supplier.confirmation"}, "plants": []string{"DE-01"},
		"auth": map[string]string{"token_file": tokenFile},
	}}
	writeYAML(t, cfgPath, cfg)
}

// postPartner posts body as partner acme; err is a transport error (no
// answer at all).
func postPartner(h *hubProc, token string, body []byte) (int, partner.Answer, error) {
	req, err := http.NewRequest(http.MethodPost, h.URL()+"/api/v1/ingest/acme", bytes.NewReader(body))
	if err != nil {
		return 0, partner.Answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	// A fresh connection per post: the hub of the previous run is gone.
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, partner.Answer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, partner.Answer{}, err
	}
	var a partner.Answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return resp.StatusCode, a, fmt.Errorf("answer %d is not JSON: %w: %s", resp.StatusCode, err, raw)
	}
	return resp.StatusCode, a, nil
}

func partnerConfirmation(id string) []byte {
	return []byte(fmt.Sprintf(`{"id": %q, "type": "supplier.confirmation", "plant": "DE-01", "occurred_at": "2026-11-27T10:00:00Z",
  "supplier_confirmation": {"purchase_order": "PO-4711", "lines": [{"line": "1", "quantity": {"value": "100", "unit": "KG"}, "promised_date": "2026-12-02T06:00:00Z"}]}}`, id))
}

// Durable before the answer, with a real process: the hub is killed by
// the failpoint right after the journal commit of a partner's event and
// before the answer. The partner gets no answer; after the restart the
// event is in the journal once, and the partner's retry is answered as a
// duplicate of it.
func TestPartnerEventDurableBeforeAnswer(t *testing.T) {
	const token = "pst_e2e_partner_acme_token_01"
	hubBin := failpointHubBinary(t)
	p := testkit.NewPKI(t)
	h := newHubProc(t, p, filepath.Join(t.TempDir(), "hub"))
	addPartner(t, h, token)
	h.bin = hubBin
	// The child inherits the variable; this test binary has no failpoints.
	t.Setenv(failpoint.EnvVar, partner.FailpointAfterCommit+"=kill@1")
	h.Start()

	body := partnerConfirmation("CONF-4711-1")
	if code, a, err := postPartner(h, token, body); err == nil {
		t.Fatalf("the post was answered (%d %+v) although the hub was to die before answering", code, a)
	}
	h.Wait(10 * time.Second)
	cmd, _ := h.current()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("hub ended with %s, want SIGKILL from the failpoint", cmd.ProcessState)
	}

	t.Setenv(failpoint.EnvVar, "")
	h.Start()
	evs, err := hubEvents(h, "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	want := partner.EventID("acme", "CONF-4711-1")
	if len(evs) != 1 || evs[0].Event.ID != want || evs[0].Producer != "partner:acme" {
		t.Fatalf("after the restart the journal holds %+v; want the one event %s from partner:acme", evs, want)
	}
	code, a, err := postPartner(h, token, body)
	if err != nil || code != http.StatusOK || a.Duplicates != 1 || a.Results[0].Status != partner.StatusDuplicate ||
		a.Results[0].Position != evs[0].Position || a.Results[0].EventID != want {
		t.Fatalf("retry: %d %+v %v; want a duplicate of position %d", code, a, err, evs[0].Position)
	}
	code, a, err = postPartner(h, token, partnerConfirmation("CONF-4711-2"))
	if err != nil || code != http.StatusOK || a.Accepted != 1 {
		t.Fatalf("a new event after the restart: %d %+v %v", code, a, err)
	}
	if evs, err = hubEvents(h, "/api/v1/events"); err != nil || len(evs) != 2 {
		t.Fatalf("journal holds %d events (%v), want 2", len(evs), err)
	}
	if code := h.Stop(30 * time.Second); code != 0 {
		t.Fatalf("hub exit code %d", code)
	}
}
