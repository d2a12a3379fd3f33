package opcua

import (
	"context"
	"io"
	"log"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/agent/source/opcua/internal/uatest"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func TestMain(m *testing.M) {
	// gopcua's server and client print some lines with the standard
	// logger; the source cannot route those.
	log.SetOutput(io.Discard)
	if role := os.Getenv(BenchRoleEnv); role != "" {
		// The benchmark started this binary again as one of its peers.
		os.Exit(runBenchRole(role))
	}
	goleak.VerifyTestMain(m)
}

const waitFor = 15 * time.Second

var (
	identOnce sync.Once
	ident     uatest.Identity
	identErr  error
)

// serverIdentity is generated once per test binary: RSA keys are slow
// under the race detector.
func serverIdentity(t testing.TB) uatest.Identity {
	t.Helper()
	identOnce.Do(func() { ident, identErr = uatest.NewIdentity() })
	if identErr != nil {
		t.Fatal(identErr)
	}
	return ident
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PLANTSYNC_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// startServer runs a test server with line L1 of n machines, each with
// State (String), Count (UInt32) and Temp (Double).
func startServer(t testing.TB, machines int) *uatest.Server {
	t.Helper()
	ns := uatest.NewNamespace()
	must(t, ns.AddFolder(uatest.Root, "L1", "L1"))
	for i := 1; i <= machines; i++ {
		addMachine(t, ns, i)
	}
	srv, err := uatest.Start(uatest.Options{Identity: serverIdentity(t), Namespace: ns, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func addMachine(t testing.TB, ns *uatest.Namespace, i int) {
	t.Helper()
	m := machineKey(i)
	must(t, ns.AddFolder("L1", m, "M"+itoa(i)))
	must(t, ns.AddVariable(m, m+".State", "State", "idle"))
	must(t, ns.AddVariable(m, m+".Count", "Count", uint32(0)))
	must(t, ns.AddVariable(m, m+".Temp", "Temp", 20.0))
}

func machineKey(i int) string { return "L1.M" + itoa(i) }

func itoa(i int) string { return strconv.Itoa(i) }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// memSink is a buffer stand-in that keeps what it is given; block makes it
// report a blocked buffer.
type memSink struct {
	mu     sync.Mutex
	events []*pb.Event
	state  map[string][]byte
	block  atomic.Bool
}

func (m *memSink) AppendAsync(ctx context.Context, events []*pb.Event, done buffer.Done) error {
	return m.AppendWithState(ctx, events, nil, done)
}

func (m *memSink) AppendWithState(_ context.Context, events []*pb.Event, state []buffer.StateWrite, done buffer.Done) error {
	m.mu.Lock()
	m.events = append(m.events, events...)
	if m.state == nil {
		m.state = map[string][]byte{}
	}
	for _, s := range state {
		m.state[s.Source+"\x00"+string(s.Key)] = s.Value
	}
	n := uint64(len(m.events))
	m.mu.Unlock()
	done(n-uint64(len(events))+1, n, nil)
	return nil
}

func (m *memSink) ReadState(src string, fn func(k, v []byte) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, v := range m.state {
		if len(k) > len(src) && k[:len(src)] == src && k[len(src)] == 0 {
			if err := fn([]byte(k[len(src)+1:]), v); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *memSink) Stats() buffer.Stats { return buffer.Stats{Blocked: m.block.Load()} }

func (m *memSink) all() []*pb.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*pb.Event(nil), m.events...)
}

// find returns the events whose source URI ends with node.
func (m *memSink) find(node string) []*pb.Event {
	var out []*pb.Event
	for _, ev := range m.all() {
		if u := ev.GetSource().GetUri(); len(u) >= len(node) && u[len(u)-len(node):] == node {
			out = append(out, ev)
		}
	}
	return out
}

type harness struct {
	src  *Source
	sink source.Sink
	reg  *prometheus.Registry
	dir  string
}

// baseConfig is a source config with fast timers for tests.
func baseConfig(endpoint string) *Config {
	cfg := NewDefaultConfig()
	cfg.Common = source.Common{Name: "line1", Type: "opcua"}
	cfg.Endpoint = endpoint
	cfg.Security = SecurityConfig{Policy: PolicyNone, Mode: ModeNone}
	cfg.Session.ConnectTimeout = 5 * time.Second
	cfg.Session.RequestTimeout = 5 * time.Second
	cfg.Session.KeepaliveInterval = time.Second
	cfg.Reconnect = ReconnectConfig{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond, RefusedInterval: 200 * time.Millisecond}
	cfg.Subscription.PublishingInterval = 50 * time.Millisecond
	cfg.Subscription.SamplingInterval = 50 * time.Millisecond
	cfg.RetryBadItems = 300 * time.Millisecond
	cfg.BrowseInterval = 200 * time.Millisecond
	return cfg
}

func startSource(t testing.TB, cfg *Config, sink source.Sink, stateDir string) *harness {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	reg := prometheus.NewRegistry()
	src, err := New(cfg, source.Env{Name: cfg.Name, AgentID: "agent-1", Plant: "DE-01", StateDir: stateDir,
		Sink: sink, Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := &harness{src: src, sink: sink, reg: reg, dir: stateDir}
	t.Cleanup(func() { h.stop(t) })
	return h
}

func (h *harness) stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.src.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// value reads a counter or gauge.
func value(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sourceEnvForTest() source.Env {
	return source.Env{Name: "line1", Plant: "DE-01", Sink: &memSink{}}
}
