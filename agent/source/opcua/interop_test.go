//go:build interop

package opcua

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/internal/faultproxy"
)

const interopWait = 30 * time.Second

// interopConfig is a source config for the node-opcua server with timers
// fit for a test.
func interopConfig(endpoint string) *Config {
	cfg := baseConfig(endpoint)
	cfg.Subscription.PublishingInterval = 100 * time.Millisecond
	cfg.Subscription.SamplingInterval = 50 * time.Millisecond
	cfg.Reconnect = ReconnectConfig{Initial: 200 * time.Millisecond, Max: 2 * time.Second, RefusedInterval: time.Second}
	return cfg
}

func hasValue(sink *memSink, node string, v float64) bool {
	for _, ev := range sink.find(node) {
		if ev.GetObservation().GetDoubleValue() == v {
			return true
		}
	}
	return false
}

// SignAndEncrypt against node-opcua: the agent trusts the server through
// `opcua trust`, the server trusts the certificate the agent generated
// once an engineer moves it from pki/rejected to pki/trusted/certs; until
// then the agent retries at the refused interval, not in a storm.
func TestInteropOPCUASignAndEncrypt(t *testing.T) {
	srv := StartNodeServer(t, NodeServerOptions{})
	stateDir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := RunCLI([]string{"trust", "-endpoint", srv.Endpoint, "-state-dir", stateDir}, &out, &errOut); code != 0 {
		t.Fatalf("opcua trust: exit %d: %s", code, errOut.String())
	}
	cfg := interopConfig(srv.Endpoint)
	cfg.Security = SecurityConfig{Policy: PolicyBasic256Sha256, Mode: ModeSignAndEncrypt}
	cfg.Nodes = []NodeConfig{{NodeID: srv.NodeID("Line1.M1.Temp")}}
	sink := &memSink{}
	h := startSource(t, cfg, sink, stateDir)

	// node-opcua rejects the unknown client certificate and files it.
	rejected := filepath.Join(srv.PKI, "rejected")
	eventually(t, interopWait, "client certificate in the server's rejected folder", func() bool {
		entries, _ := os.ReadDir(rejected)
		return len(entries) > 0
	})
	eventually(t, interopWait, "refusal reported", func() bool { return h.src.Health().LastError != "" })
	time.Sleep(3 * time.Second)
	if a := value(t, h.src.m.connectAttempts); a > 6 {
		t.Fatalf("%v connect attempts in about 3s against a server refusing the certificate (refused interval 1s)", a)
	}
	if h.src.Health().Connected {
		t.Fatal("connected with an untrusted client certificate")
	}

	// What an engineer does on the server: move the agent's certificate
	// from rejected to trusted. It is the one the agent generated.
	certPath, _ := ownPaths(stateDir)
	der, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(rejected)
	if err != nil || len(entries) != 1 {
		t.Fatalf("rejected folder: %v %v", entries, err)
	}
	got, err := os.ReadFile(filepath.Join(rejected, entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	if rd, err := decodeCertificate(got); err != nil || !bytes.Equal(rd, der) {
		t.Fatalf("the server rejected another certificate than the one in %s: %v", certPath, err)
	}
	trusted := filepath.Join(srv.PKI, "trusted", "certs")
	must(t, os.MkdirAll(trusted, 0o700))
	must(t, os.Rename(filepath.Join(rejected, entries[0].Name()), filepath.Join(trusted, entries[0].Name())))

	eventually(t, interopWait, "secure session", func() bool { return h.src.Health().State == source.StateRunning })
	if got := h.src.Security(); got != "Basic256Sha256/SignAndEncrypt" {
		t.Fatalf("session security %q", got)
	}
	srv.Do(t, "set Line1.M1.Temp 42.5")
	eventually(t, interopWait, "value over SignAndEncrypt", func() bool { return hasValue(sink, srv.NodeID("Line1.M1.Temp"), 42.5) })
}

// node-opcua applies the absolute deadband the source sends as a
// DataChangeFilter: small changes never leave the server.
func TestInteropOPCUAServerSideDeadband(t *testing.T) {
	srv := StartNodeServer(t, NodeServerOptions{})
	cfg := interopConfig(srv.Endpoint)
	cfg.Security = SecurityConfig{Policy: PolicyNone, Mode: ModeNone}
	level := srv.NodeID("Line1.Level")
	cfg.Nodes = []NodeConfig{{NodeID: level, ItemOptions: ItemOptions{Deadband: Deadband{Type: DeadbandAbsolute, Value: 1}}}}
	sink := &memSink{}
	h := startSource(t, cfg, sink, "")
	eventually(t, interopWait, "initial value", func() bool { return len(sink.find(level)) == 1 })
	before := value(t, h.src.m.notifications)
	for i := 1; i <= 9; i++ {
		srv.Do(t, fmt.Sprintf("set Line1.Level 0.%d", i))
		time.Sleep(60 * time.Millisecond)
	}
	srv.Do(t, "set Line1.Level 5")
	time.Sleep(200 * time.Millisecond)
	srv.Do(t, "set Line1.Level 5.5")
	time.Sleep(200 * time.Millisecond)
	srv.Do(t, "set Line1.Level 7")
	eventually(t, interopWait, "value 7", func() bool { return hasValue(sink, level, 7) })
	time.Sleep(300 * time.Millisecond)
	if n := value(t, h.src.m.notifications) - before; n != 2 {
		t.Fatalf("the server sent %v notifications for 12 changes; with its deadband of 1.0 want 2 (5 and 7)", n)
	}
	var got []float64
	for _, ev := range sink.find(level) {
		got = append(got, ev.GetObservation().GetDoubleValue())
	}
	if fmt.Sprint(got) != "[0 5 7]" {
		t.Fatalf("values %v, want [0 5 7]", got)
	}
}

// A node deleted on the server while subscribed is reported bad, with an
// event carrying that quality, while the other nodes keep flowing.
func TestInteropOPCUANodeDeleted(t *testing.T) {
	srv := StartNodeServer(t, NodeServerOptions{})
	cfg := interopConfig(srv.Endpoint)
	cfg.Security = SecurityConfig{Policy: PolicyNone, Mode: ModeNone}
	m1, m2 := srv.NodeID("Line1.M1.Temp"), srv.NodeID("Line1.M2.Temp")
	cfg.Nodes = []NodeConfig{{NodeID: m1}, {NodeID: m2}}
	sink := &memSink{}
	h := startSource(t, cfg, sink, "")
	eventually(t, interopWait, "both nodes", func() bool { return len(sink.find(m1)) > 0 && len(sink.find(m2)) > 0 })

	srv.Do(t, "delete Line1.M2.Temp")
	eventually(t, interopWait, "deleted node marked bad", func() bool { return value(t, h.src.m.items.WithLabelValues("bad")) == 1 })
	defer func() {
		if t.Failed() {
			for _, ev := range sink.find(m2) {
				t.Logf("event of the deleted node: %v", ev)
			}
		}
	}()
	eventually(t, interopWait, "bad-quality event of the deleted node", func() bool {
		for _, ev := range sink.find(m2) {
			// node-opcua says BadNodeIdInvalid for a deleted node.
			if st := ua.StatusCode(ev.GetObservation().GetStatusCode()); st == ua.StatusBadNodeIDUnknown || st == ua.StatusBadNodeIDInvalid {
				return true
			}
		}
		return false
	})
	for i := 1; i <= 3; i++ {
		v := 30.0 + float64(i)
		srv.Do(t, fmt.Sprintf("set Line1.M1.Temp %v", v))
		eventually(t, interopWait, "the other node flows", func() bool { return hasValue(sink, m1, v) })
	}
	// The retry keeps the node bad without disturbing the session.
	time.Sleep(3 * max(cfg.RetryBadItems, 2*cfg.Session.KeepaliveInterval))
	if value(t, h.src.m.reconnects) != 0 || !h.src.Health().Connected {
		t.Fatal("a deleted node cost the session")
	}
	if value(t, h.src.m.items.WithLabelValues("good")) != 1 || value(t, h.src.m.items.WithLabelValues("bad")) != 1 {
		t.Fatalf("items: %v", h.src.Items())
	}
}

// A server out of sessions answers BadTooManySessions; the source retries
// at the refused interval, a few attempts a minute, and gets in once a
// session is free.
func TestInteropOPCUASessionLimit(t *testing.T) {
	srv := StartNodeServer(t, NodeServerOptions{MaxSessions: 1})
	hog, err := opcua.NewClient(srv.Endpoint, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := hog.Connect(ctx); err != nil {
		t.Fatalf("first session: %v", err)
	}
	hogClosed := false
	defer func() {
		if !hogClosed {
			_ = hog.Close(context.Background())
		}
	}()

	cfg := interopConfig(srv.Endpoint)
	cfg.Security = SecurityConfig{Policy: PolicyNone, Mode: ModeNone}
	cfg.Reconnect = ReconnectConfig{Initial: 100 * time.Millisecond, Max: time.Second, RefusedInterval: 5 * time.Second}
	cfg.Nodes = []NodeConfig{{NodeID: srv.NodeID("Line1.M1.Temp")}}
	sink := &memSink{}
	h := startSource(t, cfg, sink, "")
	eventually(t, interopWait, "BadTooManySessions reported", func() bool {
		return strings.Contains(h.src.Health().LastError, "BadTooManySessions") || strings.Contains(h.src.Health().LastError, "TooManySessions")
	})
	start := srv.Count("create_session_request")
	time.Sleep(12 * time.Second)
	tries := srv.Count("create_session_request") - start
	// 12 s at a refused interval of 5 s (+ up to 20% jitter): 2 or 3.
	if tries > 3 {
		t.Fatalf("%d session attempts in 12 s against a full server; refused interval 5 s", tries)
	}
	if tries < 1 {
		t.Fatal("the source stopped trying")
	}
	t.Logf("%d CreateSession attempts in 12 s against a full server", tries)
	hogClosed = true
	_ = hog.Close(context.Background())
	eventually(t, interopWait, "session once one is free", func() bool { return h.src.Health().State == source.StateRunning })
	eventually(t, interopWait, "values", func() bool { return len(sink.find(srv.NodeID("Line1.M1.Temp"))) > 0 })
}

// A historized node changes every 200 ms while the link to the server is
// cut for 10 s (through the fault proxy); after the reconnect every change
// arrives, each exactly once. The live subscription's first values after
// the reconnect arrive before the back-fill starts (as on a busy machine):
// the back-fill must still read from where the values stopped.
func TestInteropOPCUAHistoryBackfillAfterCut(t *testing.T) {
	backfillAfterCut(t, false)
}

// The same, but the link is cut again while the back-fill runs: the next
// session back-fills the whole gap, from before the first cut, although
// the live values of the short session in between moved the marks on.
func TestInteropOPCUAHistoryBackfillLostMidway(t *testing.T) {
	backfillAfterCut(t, true)
}

func backfillAfterCut(t *testing.T, cutDuringBackfill bool) {
	srv := StartNodeServer(t, NodeServerOptions{})
	proxy, err := faultproxy.New(srv.Addr, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	cfg := interopConfig("opc.tcp://" + proxy.Addr())
	cfg.Security = SecurityConfig{Policy: PolicyNone, Mode: ModeNone}
	cfg.Session.KeepaliveInterval = 500 * time.Millisecond
	cfg.Session.RequestTimeout = 2 * time.Second
	histNode := srv.NodeID("Line1.Hist")
	cfg.Nodes = []NodeConfig{{NodeID: histNode}}
	sink := &memSink{}
	h := startSource(t, cfg, sink, "")
	eventually(t, interopWait, "running", func() bool { return h.src.Health().State == source.StateRunning })
	// The hook acts from the reconnect after the test's cut on: the first
	// session may still be on its way to its own back-fill.
	var armed atomic.Bool
	var calls atomic.Int32
	hook := func() {
		if !armed.Load() {
			return
		}
		time.Sleep(time.Second) // live values first
		if cutDuringBackfill && calls.Add(1) == 1 {
			proxy.Cut()
			time.AfterFunc(3*time.Second, proxy.Restore)
		}
	}
	h.src.beforeBackfill.Store(&hook)
	reconnects := 1.0
	if cutDuringBackfill {
		reconnects = 2
	}

	srv.Do(t, "tick Line1.Hist 200")
	eventually(t, interopWait, "values before the cut", func() bool { return len(sink.find(histNode)) >= 5 })
	armed.Store(true)
	proxy.Cut()
	cutAt := time.Now()
	eventually(t, interopWait, "cut noticed", func() bool { return !h.src.Health().Connected })
	time.Sleep(10*time.Second - time.Since(cutAt))
	proxy.Restore()
	eventually(t, interopWait, "reconnected", func() bool { return value(t, h.src.m.reconnects) >= reconnects && h.src.Health().Connected })
	time.Sleep(2 * time.Second)
	srv.Do(t, "untick Line1.Hist")
	last := uint64(0)
	eventually(t, interopWait, "last value settles", func() bool {
		evs := sink.find(histNode)
		v := evs[len(evs)-1].GetObservation().GetUintValue()
		if v == last {
			return true
		}
		last = v
		time.Sleep(500 * time.Millisecond)
		return false
	})

	// Each value once. After a session lost mid back-fill, values the short
	// session delivered live are read back again: they come with the same
	// event id, which the hub's dedup drops, so a repeat counts once.
	seen := map[uint64]int{}
	ids := map[string]uint64{}
	repeats := 0
	first := ^uint64(0)
	for _, ev := range sink.find(histNode) {
		v := ev.GetObservation().GetUintValue()
		first = min(first, v)
		if prev, ok := ids[ev.GetId()]; ok {
			if !cutDuringBackfill || prev != v {
				t.Fatalf("event id %s delivered twice (values %d, %d)", ev.GetId(), prev, v)
			}
			repeats++
			continue
		}
		ids[ev.GetId()] = v
		seen[v]++
	}
	var missing, doubled []uint64
	for v := first; v <= last; v++ {
		switch seen[v] {
		case 0:
			missing = append(missing, v)
		case 1:
		default:
			doubled = append(doubled, v)
		}
	}
	if len(missing) > 0 || len(doubled) > 0 {
		t.Fatalf("values %d..%d: missing %v, more than once %v", first, last, missing, doubled)
	}
	if n := value(t, h.src.m.backfilled); n < 30 {
		t.Fatalf("backfilled %v values; a 10 s cut at 5 changes/s should need about 50", n)
	}
	t.Logf("values %d..%d each once; %v back-filled with HistoryRead; %d repeated with the same id", first, last, value(t, h.src.m.backfilled), repeats)
}

// Username and password from a file: a wrong password is refused (and
// retried at the refused interval), the right one gets a session. The
// password is encrypted to the server's certificate, so the source sends
// it only to a trusted server, even on a None channel.
func TestInteropOPCUAUsernamePassword(t *testing.T) {
	srv := StartNodeServer(t, NodeServerOptions{User: "plantsync:s3cret"})
	stateDir := t.TempDir()
	pwFile := filepath.Join(t.TempDir(), "password")
	must(t, os.WriteFile(pwFile, []byte("wrong\n"), 0o600))
	cfg := interopConfig(srv.Endpoint)
	cfg.Security = SecurityConfig{Policy: PolicyNone, Mode: ModeNone}
	cfg.Auth = AuthConfig{Type: AuthUsername, Username: "plantsync", PasswordFile: pwFile}
	cfg.Nodes = []NodeConfig{{NodeID: srv.NodeID("Line1.M1.Temp")}}
	sink := &memSink{}
	h := startSource(t, cfg, sink, stateDir)
	eventually(t, interopWait, "untrusted server refused before the password is sent", func() bool {
		return strings.Contains(h.src.Health().LastError, "server certificate is not trusted")
	})
	var out, errOut bytes.Buffer
	if code := RunCLI([]string{"trust", "-endpoint", srv.Endpoint, "-state-dir", stateDir}, &out, &errOut); code != 0 {
		t.Fatalf("opcua trust: exit %d: %s", code, errOut.String())
	}
	eventually(t, interopWait, "wrong password refused", func() bool {
		e := h.src.Health().LastError
		return strings.Contains(e, "BadUserAccessDenied") || strings.Contains(e, "BadIdentityTokenRejected") || strings.Contains(e, "BadIdentityTokenInvalid")
	})
	if h.src.Health().Connected {
		t.Fatal("connected with a wrong password")
	}
	// The password file is read at every connect: fixing it is enough.
	must(t, os.WriteFile(pwFile, []byte("s3cret\n"), 0o600))
	eventually(t, interopWait, "session with the right password", func() bool { return h.src.Health().State == source.StateRunning })
	srv.Do(t, "set Line1.M1.Temp 55")
	eventually(t, interopWait, "value", func() bool { return hasValue(sink, srv.NodeID("Line1.M1.Temp"), 55) })
}

// The AES policies against a server that accepts any client certificate:
// explicit Aes128_Sha256_RsaOaep, and auto picking the strongest offered.
func TestInteropOPCUAAesPolicies(t *testing.T) {
	srv := StartNodeServer(t, NodeServerOptions{AcceptUnknown: true})
	for _, c := range []struct {
		sec  SecurityConfig
		want string
	}{
		{SecurityConfig{Policy: PolicyAes128Sha256RsaOaep, Mode: ModeSign}, "Aes128_Sha256_RsaOaep/Sign"},
		{SecurityConfig{Policy: PolicyAes128Sha256RsaOaep, Mode: ModeSignAndEncrypt}, "Aes128_Sha256_RsaOaep/SignAndEncrypt"},
		{SecurityConfig{Policy: PolicyAuto, Mode: ModeAuto}, "Aes256_Sha256_RsaPss/SignAndEncrypt"},
	} {
		t.Run(c.want, func(t *testing.T) {
			stateDir := t.TempDir()
			var out, errOut bytes.Buffer
			if code := RunCLI([]string{"trust", "-endpoint", srv.Endpoint, "-state-dir", stateDir}, &out, &errOut); code != 0 {
				t.Fatalf("opcua trust: exit %d: %s", code, errOut.String())
			}
			cfg := interopConfig(srv.Endpoint)
			cfg.Security = c.sec
			cfg.Nodes = []NodeConfig{{NodeID: srv.NodeID("Line1.M1.Count")}}
			sink := &memSink{}
			h := startSource(t, cfg, sink, stateDir)
			eventually(t, interopWait, "session", func() bool { return h.src.Health().State == source.StateRunning })
			if got := h.src.Security(); got != c.want {
				t.Fatalf("session security %q, want %q", got, c.want)
			}
			eventually(t, interopWait, "a value", func() bool { return len(sink.find(srv.NodeID("Line1.M1.Count"))) > 0 })
			h.stop(t)
		})
	}
}
