package mqtt

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// adminServer mounts the source's admin handler the way the agent does,
// next to a status endpoint naming its sources.
func adminServer(t *testing.T, s *Source, others ...string) string {
	t.Helper()
	mux := http.NewServeMux()
	prefix := "/api/v1/sources/" + s.env.Name
	mux.Handle(prefix+"/", http.StripPrefix(prefix, s.Admin()))
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		srcs := map[string]any{s.env.Name: s.Health()}
		for _, o := range others {
			srcs[o] = map[string]string{"state": "running"}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"sources": srcs})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = RunCLI(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestQuarantineAdminAPIAndCLI(t *testing.T) {
	_, addr := startBroker(t)
	buf := openBuffer(t, t.TempDir())
	stateDir := t.TempDir()
	cfg := baseConfig(addr, completionSub())
	s, _ := testSource(t, cfg, buf, stateDir)
	waitRunning(t, s)
	pub := testPublisher(t, addr)
	publish(t, pub, "mes/DE-01/L1/completion", 1, false, []byte(`{"message_id":"q-1","order":"PO-1"}`))
	publish(t, pub, "mes/DE-01/L1/completion", 1, false, []byte(`not json`))
	eventually(t, 5*time.Second, "two quarantined", func() bool { return s.q.count() == 2 })

	admin := adminServer(t, s, "opcua-line1")
	code, out, errOut := runCLI("quarantine", "list", "-addr", admin)
	if code != 0 || !strings.Contains(out, "field good: missing at path quantity") || !strings.Contains(out, "not json") ||
		!strings.Contains(out, "2 quarantined message(s) in source mes") {
		t.Fatalf("list: code %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI("quarantine", "list", "-addr", admin, "-source", "mes", "-json")
	var l QuarantineList
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || l.Total != 2 || len(l.Entries) != 2 || string(l.Entries[1].Payload) != "not json" {
		t.Fatalf("list -json: %d %s", code, out)
	}

	// GET one, DELETE one, 404s.
	resp, err := http.Get("http://" + admin + "/api/v1/sources/mes/quarantine/1")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET entry: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	resp, _ = http.Get("http://" + admin + "/api/v1/sources/mes/quarantine/99")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET missing entry: %s", resp.Status)
	}
	resp.Body.Close()

	// Nothing fixed yet: replay keeps both and exits 1.
	code, out, _ = runCLI("quarantine", "replay", "-addr", admin)
	if code != 1 || !strings.Contains(out, "0 replayed, 2 still failing") {
		t.Fatalf("replay before fix: %d\n%s", code, out)
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+admin+"/api/v1/sources/mes/quarantine/2", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	resp.Body.Close()

	// A config file names the admin address and the one MQTT source.
	cfgFile := t.TempDir() + "/agent.yaml"
	writeFile(t, cfgFile, "metrics: {listen: \""+admin+"\"}\nsources:\n  - {name: mes, type: mqtt}\n  - {name: gen, type: generator}\n")
	code, out, errOut = runCLI("quarantine", "replay", "-config", cfgFile, "-id", "1")
	if code != 1 || !strings.Contains(out, "1\tfailed\tmes/DE-01/L1/completion\tfield good: missing at path quantity") {
		t.Fatalf("replay -id 1: %d\n%s%s", code, out, errOut)
	}

	if code, _, errOut = runCLI("quarantine", "replay", "-addr", admin, "-id", "x"); code != 2 || !strings.Contains(errOut, "not a quarantine id") {
		t.Errorf("bad -id: %d %s", code, errOut)
	}
	if code, _, _ = runCLI("quarantine", "purge"); code != 2 {
		t.Errorf("unknown command: %d", code)
	}
	if code, _, errOut = runCLI("quarantine", "list", "-addr", "127.0.0.1:1"); code != 1 || !strings.Contains(errOut, "is the agent running?") {
		t.Errorf("agent down: %d %s", code, errOut)
	}
}
