package hub_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/hub"
	"github.com/plantsync/plantsync/hub/partner"
	"github.com/plantsync/plantsync/internal/testkit"
)

// A hub whose HTTP listener serves TLS and asks for client certificates:
// a partner authenticates with its certificate, another with a token, and
// operators keep using bearer tokens without a certificate.
func TestPartnerIngestThroughHub(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	p := testkit.NewPKI(t)
	dir := t.TempDir()
	cfg := testkit.HubConfig(t, p, filepath.Join(dir, "hub"))
	cfg.HTTP.TLS.Cert, cfg.HTTP.TLS.Key, cfg.HTTP.TLS.ClientCA = p.Paths.HubCert, p.Paths.HubKey, p.Paths.CACert
	const portalToken = "pst_portal_token_for_tests_only"
	cfg.Partners = []partner.Config{
		{Name: "wms", Types: []string{"goods.receipt"}, Plants: []string{"*"}, Auth: partner.Auth{ClientCert: "wms-1"}},
		{Name: "portal", Types: []string{"supplier.confirmation"}, Plants: []string{"DE-01"},
			Auth: partner.Auth{TokenFile: writeFile(t, dir, "portal.token", portalToken+"\n")}},
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
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

	caPEM, err := os.ReadFile(p.Paths.CACert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	certFile, keyFile := p.Agent(t, "wms-1", "DE-01")
	wmsCert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	client := func(certs ...tls.Certificate) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	do := func(c *http.Client, method, path, token string, body []byte) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, h.URL()+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, raw
	}
	receipt := []byte(`{"id": "GR-77", "type": "goods.receipt", "plant": "US-07", "occurred_at": "2026-11-27T10:00:00Z",
  "goods_receipt": {"purchase_order": "PO-1", "item": "C-1", "quantity": {"value": "3", "unit": "EA"}, "erp_reference": "SHIP-9"}}`)
	confirmation := []byte(`{"id": "CONF-1", "type": "supplier.confirmation", "plant": "DE-01", "occurred_at": "2026-11-27T10:00:00Z",
  "supplier_confirmation": {"purchase_order": "PO-1", "lines": [{"line": "1", "quantity": {"value": "3", "unit": "EA"}}]}}`)

	if code, body := do(client(), http.MethodPost, "/api/v1/ingest/wms", "", receipt); code != http.StatusUnauthorized {
		t.Fatalf("wms without its certificate: %d %s", code, body)
	}
	code, body := do(client(wmsCert), http.MethodPost, "/api/v1/ingest/wms", "", receipt)
	var a partner.Answer
	if err := json.Unmarshal(body, &a); code != http.StatusOK || err != nil || a.Accepted != 1 {
		t.Fatalf("wms with its certificate: %d %s", code, body)
	}
	// An operator token is not a partner credential.
	if code, body := do(client(), http.MethodPost, "/api/v1/ingest/portal", testkit.AdminToken, confirmation); code != http.StatusUnauthorized {
		t.Fatalf("portal with an operator token: %d %s", code, body)
	}
	if code, body := do(client(), http.MethodPost, "/api/v1/ingest/portal", portalToken, confirmation); code != http.StatusOK {
		t.Fatalf("portal with its token: %d %s", code, body)
	}

	// Operators read the events without a client certificate.
	var page struct {
		Events []struct {
			Position uint64 `json:"position"`
			Producer string `json:"producer"`
			Event    struct {
				ID         string            `json:"id"`
				Attributes map[string]string `json:"attributes"`
			} `json:"event"`
		} `json:"events"`
	}
	code, body = do(client(), http.MethodGet, "/api/v1/events", testkit.ViewerToken, nil)
	if err := json.Unmarshal(body, &page); code != http.StatusOK || err != nil || len(page.Events) != 2 {
		t.Fatalf("events: %d %s", code, body)
	}
	if e := page.Events[0]; e.Producer != "partner:wms" || e.Position != a.Results[0].Position ||
		e.Event.ID != partner.EventID("wms", "GR-77") || e.Event.Attributes[partner.AttrPartnerID] != "GR-77" {
		t.Fatalf("first event: %+v", e)
	}
	if page.Events[1].Producer != "partner:portal" {
		t.Fatalf("second event from %q", page.Events[1].Producer)
	}
	if code, body := do(client(), http.MethodGet, "/", "", nil); code != http.StatusOK || !strings.Contains(string(body), "/api/v1/ingest/{partner}") {
		t.Fatalf("GET / does not list the ingestion endpoint: %d %s", code, body)
	}
	if code, body := do(client(), http.MethodGet, "/metrics", "", nil); code != http.StatusOK ||
		!strings.Contains(string(body), `plantsync_hub_partner_events_total{partner="wms",result="accepted"} 1`) {
		t.Fatalf("metrics lack the partner counters: %d", code)
	}
}
