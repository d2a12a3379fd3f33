// Package testkit builds the real parts integration tests start: a PKI in a
// temp folder, an in-process mochi-mqtt broker on 127.0.0.1:0, and hub and
// agent configs wired to them. Only tests import it.
package testkit

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/agent/source"
	mqttsrc "github.com/plantsync/plantsync/agent/source/mqtt"
	"github.com/plantsync/plantsync/hub"
	hubauth "github.com/plantsync/plantsync/hub/auth"
	"github.com/plantsync/plantsync/internal/pki"
)

// PKI is a CA with a hub certificate and issued agent certificates.
type PKI struct {
	Dir   string
	Paths *pki.Paths
}

// NewPKI creates a CA in a temp folder.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	p, err := pki.Init(dir, pki.InitOptions{Name: "test"})
	if err != nil {
		t.Fatalf("pki init: %v", err)
	}
	return &PKI{Dir: dir, Paths: p}
}

// Agent issues a certificate for id at plant and returns cert and key paths.
func (p *PKI) Agent(t testing.TB, id, plant string) (cert, key string) {
	t.Helper()
	certPEM, keyPEM, err := pki.IssueAgent(p.Dir, pki.AgentRequest{ID: id, Plant: plant})
	if err != nil {
		t.Fatalf("issue agent: %v", err)
	}
	cert, key = filepath.Join(p.Dir, id+".crt"), filepath.Join(p.Dir, id+".key")
	if err := pki.WriteCertFile(cert, certPEM); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(key, keyPEM); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// Broker starts a mochi-mqtt broker on 127.0.0.1:0 (or addr) and returns it
// with its address. It is closed when the test ends.
func Broker(t testing.TB, addr string) (*mqtt.Server, string) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	b := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := b.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: addr})
	if err := b.AddListener(l); err != nil {
		t.Fatalf("broker listen: %v", err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, l.Address()
}

// HubConfig is a hub config on loopback ports chosen by the kernel.
func HubConfig(t testing.TB, p *PKI, storageDir string) hub.Config {
	t.Helper()
	cfg := hub.NewDefaultConfig()
	cfg.GRPC.Listen = "127.0.0.1:0"
	cfg.GRPC.TLS.Cert, cfg.GRPC.TLS.Key, cfg.GRPC.TLS.ClientCA = p.Paths.HubCert, p.Paths.HubKey, p.Paths.CACert
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Storage.Dir = storageDir
	cfg.PKI.Dir = p.Dir
	cfg.HTTP.Auth.TokensFile = TokensFile(t, t.TempDir())
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("hub config: %v", errs)
	}
	return cfg
}

// AgentConfig is an agent config with one MQTT source reading the MES
// topics of plantsim's format from broker.
func AgentConfig(t testing.TB, p *PKI, id, plant, stateDir, hubAddr, broker string) agent.Config {
	t.Helper()
	cert, key := p.Agent(t, id, plant)
	cfg := agent.NewDefaultConfig()
	cfg.Agent = agent.Identity{ID: id, Plant: plant, StateDir: stateDir}
	cfg.Uplink.Hub = hubAddr
	cfg.Uplink.TLS.CA, cfg.Uplink.TLS.Cert, cfg.Uplink.TLS.Key = p.Paths.CACert, cert, key
	cfg.Uplink.TLS.ServerName = "localhost"
	cfg.Uplink.BackoffInitial = 50 * time.Millisecond
	cfg.Uplink.BackoffMax = 500 * time.Millisecond
	cfg.Metrics.Listen = "127.0.0.1:0"
	if broker != "" {
		mc := mqttsrc.NewDefaultConfig()
		mc.Common = source.Common{Name: "mes", Type: "mqtt"}
		mc.Brokers = []string{"tcp://" + broker}
		mc.ClientID = "plantsync-" + id
		mc.Subscriptions = []mqttsrc.Subscription{{Topic: "mes/+/+/completion", QoS: 1, EventType: "production.completion", IDField: "message_id"}}
		cfg.Sources = []agent.SourceEntry{{Common: mc.Common, Config: mc}}
	}
	return cfg
}

// FreePort reserves nothing: it returns a port that was free a moment ago,
// for processes that must be told their port before they start.
func FreePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CompletionJSON is a plantsim-format MES completion message.
func CompletionJSON(id string) []byte {
	return []byte(fmt.Sprintf(`{"message_id":%q,"order":"PO-1001","item":"P-4711","quantity":"12","unit":"EA","work_center":"L1-M1","occurred_at":"2026-11-27T10:00:00Z"}`, id))
}

// Bearer tokens of the tokens file HubConfig and TokensFile write, one per
// role. Test-only values: never use them outside tests.
const (
	AdminToken    = "pst_testkit_admin"
	ApproverToken = "pst_testkit_approver"
	ViewerToken   = "pst_testkit_viewer"
)

// TokensFile writes a hub tokens file (http.auth.tokens_file) in dir with
// AdminToken, ApproverToken and ViewerToken, and returns its path. Tests
// that write hub YAML themselves put it under http.auth.tokens_file.
func TokensFile(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "tokens.yaml")
	for _, e := range []struct {
		subject, token string
		role           hubauth.Role
	}{{"test-admin", AdminToken, hubauth.Admin}, {"test-approver", ApproverToken, hubauth.Approver}, {"test-viewer", ViewerToken, hubauth.Viewer}} {
		if err := hubauth.AppendToken(path, e.subject, e.role, hubauth.Hash(e.token)); err != nil {
			t.Fatalf("tokens file: %v", err)
		}
	}
	return path
}

// TokenClient is an HTTP client that sends token with every request that
// has no Authorization header.
func TokenClient(token string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: bearer{token: token}}
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return http.DefaultTransport.RoundTrip(r)
}
