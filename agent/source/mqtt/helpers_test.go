package mqtt

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

const testPlant = "DE-01"

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("PLANTSYNC_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// openBuffer opens a real agent buffer in dir (the source's sink).
func openBuffer(t testing.TB, dir string) *buffer.Buffer {
	t.Helper()
	cfg := buffer.NewDefaultConfig()
	cfg.CommitInterval = time.Millisecond
	b, err := buffer.Open(filepath.Join(dir, "buffer.db"), cfg, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// bufferedEvents reads every committed event.
func bufferedEvents(t testing.TB, b *buffer.Buffer) []*pb.Event {
	t.Helper()
	batch, err := b.ReadAfter(0, 1<<20, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*pb.Event, 0, len(batch.Events))
	for _, raw := range batch.Events {
		var ev pb.Event
		if err := proto.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, &ev)
	}
	return out
}

func eventsOfType(evs []*pb.Event, typ string) []*pb.Event {
	var out []*pb.Event
	for _, e := range evs {
		if e.GetType() == typ {
			out = append(out, e)
		}
	}
	return out
}

// baseConfig is a source config for broker (host:port) with subs.
func baseConfig(broker string, subs ...Subscription) *Config {
	c := NewDefaultConfig()
	c.Common = source.Common{Name: "mes", Type: "mqtt"}
	c.Brokers = []string{"tcp://" + broker}
	c.ClientID = fmt.Sprintf("plantsync-test-%d", time.Now().UnixNano())
	c.ReconnectInitial = 50 * time.Millisecond
	c.ReconnectMax = 200 * time.Millisecond
	c.ConnectTimeout = 2 * time.Second
	c.Subscriptions = subs
	return c
}

func completionSub() Subscription {
	return Subscription{Topic: "mes/{plant}/{line}/completion", EventType: "production.completion", IDField: "message_id"}
}

// testSource builds and starts a source on sink, with its state in
// stateDir, and shuts it down when the test ends.
func testSource(t testing.TB, cfg *Config, sink source.Sink, stateDir string) (*Source, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(cfg, source.Env{Name: cfg.Name, AgentID: "agent-1", Plant: testPlant, StateDir: stateDir,
		Sink: sink, Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSource(t, s) })
	return s, reg
}

func stopSource(t testing.TB, s *Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func waitRunning(t testing.TB, s *Source) {
	t.Helper()
	eventually(t, 10*time.Second, "mqtt source subscribed", func() bool { return s.Health().State == source.StateRunning })
}

// testPublisher is a plain paho client for the tests' messages.
func testPublisher(t testing.TB, broker string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano())).SetAutoReconnect(false)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

func publish(t testing.TB, c paho.Client, topic string, qos byte, retained bool, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// inflight is how many QoS 1/2 messages the broker holds unacknowledged
// for a client.
func inflight(b *mochi.Server, clientID string) int {
	cl, ok := b.Clients.Get(clientID)
	if !ok {
		return -1
	}
	return cl.State.Inflight.Len()
}

func metricValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
		return sum
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// startBroker starts an in-process mochi broker on 127.0.0.1:0 (testkit
// has one too, but testkit imports this package).
func startBroker(t testing.TB) (*mochi.Server, string) {
	t.Helper()
	return startBrokerWith(t, "127.0.0.1:0", new(auth.AllowHook), nil, nil)
}

// startBrokerWith starts mochi with an auth hook (and its config) and an
// optional TLS config, on addr.
func startBrokerWith(t testing.TB, addr string, hook mochi.Hook, hookCfg any, tlsCfg *tls.Config) (*mochi.Server, string) {
	t.Helper()
	b := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := b.AddHook(hook, hookCfg); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: addr, TLSConfig: tlsCfg})
	if err := b.AddListener(l); err != nil {
		t.Fatalf("broker listen: %v", err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBroker(b) })
	return b, l.Address()
}

var brokerClosed sync.Map // *mochi.Server -> *sync.Once

// closeBroker closes b once; mochi panics on a second Close.
func closeBroker(b *mochi.Server) {
	once, _ := brokerClosed.LoadOrStore(b, new(sync.Once))
	once.(*sync.Once).Do(func() { _ = b.Close() })
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// completionJSON is an MES completion message with its own id.
func completionJSON(id string) []byte {
	return []byte(fmt.Sprintf(`{"message_id":%q,"order":"PO-1001","item":"P-4711","quantity":"12","unit":"EA","work_center":"L1-M1","occurred_at":"2026-11-27T10:00:00Z"}`, id))
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
