package uplink_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/uplink"
	"github.com/plantsync/plantsync/hub/ingest"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/internal/pki"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// After a long hub outage the agent must find the hub again within its own
// backoff_max, not gRPC's channel backoff (1 s growing to 120 s), which
// otherwise fails every stream fast until its own next redial.
func TestReconnectHonoursBackoffMax(t *testing.T) {
	dir := t.TempDir()
	paths, err := pki.Init(filepath.Join(dir, "pki"), pki.InitOptions{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := pki.IssueAgent(paths.Dir, pki.AgentRequest{ID: "agent-1", Plant: "DE-01"})
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "agent.crt"), filepath.Join(dir, "agent.key")
	if err := pki.WriteCertFile(cert, certPEM); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(key, keyPEM); err != nil {
		t.Fatal(err)
	}

	// The hub's port is taken now and served only after the outage.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	buf, err := buffer.Open(filepath.Join(dir, "buffer.db"), buffer.NewDefaultConfig(), buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	cfg := uplink.NewDefaultConfig()
	cfg.Hub = addr
	cfg.TLS = uplink.TLSConfig{CA: paths.CACert, Cert: cert, Key: key}
	cfg.BackoffInitial, cfg.BackoffMax = 20*time.Millisecond, 100*time.Millisecond
	up := uplink.New(cfg, buf, uplink.Identity{AgentID: "agent-1", Plant: "DE-01"}, nil, nil)
	if err := up.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, up)

	// Long enough for gRPC's default channel backoff to reach its third
	// step (1 s, 1.6 s, 2.56 s): the next default redial would then come
	// about 2 s after the hub is back.
	outage := 3 * time.Second
	time.Sleep(outage)
	if st := up.State(); st.Connected || st.Reconnects < 5 {
		t.Fatalf("during the outage: state %+v; want disconnected after several attempts", st)
	}

	j, err := journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(dir, "journal.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	hcfg := ingest.NewDefaultConfig()
	hcfg.Listen = addr
	hcfg.TLS = ingest.TLSConfig{Cert: paths.HubCert, Key: paths.HubKey, ClientCA: paths.CACert}
	srv := ingest.New(hcfg, j, nil, nil)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("hub on its first port %s: %v", addr, err)
	}
	defer shutdown(t, srv)
	// The uplink goes first: the hub's graceful stop waits for its stream.
	defer shutdown(t, up)
	back := time.Now()

	// backoff_max plus jitter and a TLS handshake is well under a second;
	// gRPC's default backoff would take about two.
	limit := 1500 * time.Millisecond
	for !up.State().Connected {
		if time.Since(back) > limit {
			t.Fatalf("not reconnected %s after the hub came back (backoff_max %s)", limit, cfg.BackoffMax)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("reconnected %s after the hub came back", time.Since(back).Round(time.Millisecond))
}

func shutdown(t *testing.T, c interface{ Shutdown(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}
