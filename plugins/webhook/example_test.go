package main

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/plugins/sdk"
)

// The sample config stays valid: its plugin section configures the
// connector (only the CA file is swapped for one that exists here).
func TestExampleConfig(t *testing.T) {
	raw, err := os.ReadFile("webhook.example.yaml")
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
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := hub.Destinations[0].Config
	cfg["tls"].(map[string]any)["ca_file"] = ca
	_, info := connect(t, cfg)
	if !info.Supports("purchase_order.publish") || !info.Has(sdk.CapabilityLookup) {
		t.Errorf("info = %+v", info)
	}
}
