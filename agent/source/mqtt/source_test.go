package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/internal/pki"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// gatedSink holds every commit until release is called: the broker must
// see no acknowledgement before that.
type gatedSink struct {
	recordingSink
	mu    sync.Mutex
	held  []func()
	open  bool
	count int
}

func (g *gatedSink) AppendWithState(ctx context.Context, events []*pb.Event, state []buffer.StateWrite, done buffer.Done) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.count += len(events)
	commit := func() { _ = g.recordingSink.AppendWithState(ctx, events, state, done) }
	if g.open {
		commit()
		return nil
	}
	g.held = append(g.held, commit)
	return nil
}

func (g *gatedSink) appended() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.count
}

func (g *gatedSink) release() {
	g.mu.Lock()
	held := g.held
	g.held, g.open = nil, true
	g.mu.Unlock()
	for _, c := range held {
		c()
	}
}

func TestAckOnlyAfterCommit(t *testing.T) {
	mb, addr := startBroker(t)
	sink := &gatedSink{}
	cfg := baseConfig(addr, completionSub())
	s, reg := testSource(t, cfg, sink, t.TempDir())
	waitRunning(t, s)
	pub := testPublisher(t, addr)
	const n = 50
	for i := 0; i < n; i++ {
		publish(t, pub, "mes/DE-01/L1/completion", 1, false, completionJSON(fmt.Sprintf("m-%d", i)))
	}
	eventually(t, 5*time.Second, "all messages handed to the sink", func() bool { return sink.appended() == n })
	// Handed over but not committed: the broker still holds every one.
	time.Sleep(100 * time.Millisecond) // give a wrong early ack the chance to show
	if got := inflight(mb, cfg.ClientID); got != n {
		t.Fatalf("broker holds %d unacknowledged messages before the commit, want %d", got, n)
	}
	sink.release()
	eventually(t, 5*time.Second, "acknowledgements after the commit", func() bool { return inflight(mb, cfg.ClientID) == 0 })
	if got := metricValue(t, reg, "plantsync_agent_mqtt_ack_latency_seconds"); got != n {
		t.Errorf("ack latency observed %v times, want %d", got, n)
	}
	if got := metricValue(t, reg, "plantsync_agent_mqtt_mapped_total"); got != n {
		t.Errorf("mapped_total %v, want %d", got, n)
	}
}

// With max_inflight messages awaiting their commit, the source reads no
// further: the rest waits in the broker until commits free room.
func TestMaxInflightHoldsBacklogInBroker(t *testing.T) {
	mb, addr := startBroker(t)
	sink := &gatedSink{}
	cfg := baseConfig(addr, completionSub())
	cfg.MaxInflight = 10
	s, _ := testSource(t, cfg, sink, t.TempDir())
	waitRunning(t, s)
	pub := testPublisher(t, addr)
	const n = 50
	for i := 0; i < n; i++ {
		publish(t, pub, "mes/DE-01/L1/completion", 1, false, completionJSON(fmt.Sprintf("m-%d", i)))
	}
	eventually(t, 5*time.Second, "max_inflight messages handed to the sink", func() bool { return sink.appended() == cfg.MaxInflight })
	time.Sleep(100 * time.Millisecond) // give a read past the bound the chance to show
	if got := sink.appended(); got != cfg.MaxInflight {
		t.Fatalf("%d messages handed to the sink before any commit, want max_inflight %d", got, cfg.MaxInflight)
	}
	sink.release()
	eventually(t, 5*time.Second, "every message committed and acknowledged", func() bool {
		return sink.appended() == n && inflight(mb, cfg.ClientID) == 0
	})
}

// A commit that fails (buffer closed) leaves the message unacknowledged, so
// the broker redelivers it.
func TestNoAckWhenCommitFails(t *testing.T) {
	mb, addr := startBroker(t)
	sink := &recordingSink{fail: buffer.ErrClosed}
	cfg := baseConfig(addr, completionSub())
	s, reg := testSource(t, cfg, sink, t.TempDir())
	waitRunning(t, s)
	pub := testPublisher(t, addr)
	publish(t, pub, "mes/DE-01/L1/completion", 1, false, completionJSON("x-1"))
	eventually(t, 5*time.Second, "buffer error counted", func() bool {
		return metricValue(t, reg, "plantsync_agent_mqtt_errors_total") >= 1
	})
	time.Sleep(50 * time.Millisecond)
	if got := inflight(mb, cfg.ClientID); got != 1 {
		t.Fatalf("broker holds %d unacknowledged messages, want 1", got)
	}
}

func TestMalformedQuarantinedWhileGoodFlow(t *testing.T) {
	mb, addr := startBroker(t)
	bufDir, stateDir := t.TempDir(), t.TempDir()
	buf := openBuffer(t, bufDir)
	cfg := baseConfig(addr, completionSub())
	s, reg := testSource(t, cfg, buf, stateDir)
	waitRunning(t, s)
	pub := testPublisher(t, addr)
	bad := [][]byte{[]byte(`{"message_id":"b-1","quantity":`), []byte(`{"message_id":"b-2","order":"PO-7"}`), {0xff, 0x00, 0x13}}
	const good = 300
	for i := 0; i < good; i++ {
		publish(t, pub, "mes/DE-01/L1/completion", 1, false, completionJSON(fmt.Sprintf("g-%d", i)))
		if i%100 == 50 {
			publish(t, pub, "mes/DE-01/L1/completion", 1, false, bad[i/100])
		}
	}
	eventually(t, 10*time.Second, "every message committed and acknowledged", func() bool {
		return len(bufferedEvents(t, buf)) == good+len(bad) && inflight(mb, cfg.ClientID) == 0
	})
	evs := bufferedEvents(t, buf)
	if n := len(eventsOfType(evs, "production.completion")); n != good {
		t.Errorf("%d completions, want %d", n, good)
	}
	errs := eventsOfType(evs, "source.error")
	if len(errs) != len(bad) {
		t.Fatalf("%d source.error events, want %d", len(errs), len(bad))
	}
	for _, e := range errs {
		se := e.GetSourceError()
		if se.GetQuarantineId() == "" || se.GetReason() == "" || !strings.HasPrefix(se.GetLocation(), "topic mes/DE-01/L1/completion") || len(se.GetRaw()) == 0 {
			t.Errorf("source.error lacks quarantine id, reason, location or payload: %v", se)
		}
	}
	if got := metricValue(t, reg, "plantsync_agent_mqtt_quarantined_total"); got != float64(len(bad)) {
		t.Errorf("quarantined_total %v", got)
	}
	if got := metricValue(t, reg, "plantsync_agent_mqtt_quarantine_entries"); got != float64(len(bad)) {
		t.Errorf("quarantine_entries %v", got)
	}
	if h := s.Health(); h.State != source.StateRunning {
		t.Errorf("health %+v after bad payloads", h)
	}

	// Fix the mapping (a default for the missing quantity), restart on the
	// same state, and replay: the fixed one leaves the quarantine, the
	// broken JSON stays.
	stopSource(t, s)
	fixed := completionSub()
	fixed.Fields = map[string]Value{"good": {Path: "quantity", UnitPath: "unit", Default: "0"}}
	cfg2 := baseConfig(addr, fixed)
	cfg2.ClientID = cfg.ClientID
	s2, _ := testSource(t, cfg2, buf, stateDir)
	waitRunning(t, s2)
	rep, err := s2.Replay(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Replayed != 1 || rep.Failed != 2 {
		t.Fatalf("replay: %+v", rep)
	}
	comps := eventsOfType(bufferedEvents(t, buf), "production.completion")
	last := comps[len(comps)-1]
	if last.GetAttributes()["message_id"] != "b-2" || last.GetProductionCompletion().GetGood().GetValue() != "0" || last.GetId() != EventID(testPlant, "mes", "b-2") {
		t.Errorf("replayed event: %v", last)
	}
	if n := s2.q.count(); n != 2 {
		t.Errorf("%d entries left in the quarantine, want 2", n)
	}
}

// The content-hash window is committed with the buffer: after a restart a
// redelivered message finds its id and is acknowledged without a second
// event; a window that has moved on forgets it.
func TestContentHashWindowSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	sub := Subscription{Topic: "mes/+/+/status", EventType: "production.order.status", ContentHash: true}
	msg := []byte(`{"order":"PO-1","status":"released"}`)
	topic := "mes/DE-01/L1/status"

	bufCfg := buffer.NewDefaultConfig()
	buf, err := buffer.Open(filepath.Join(dir, "buffer.db"), bufCfg, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := NewDefaultConfig()
	cfg.ContentHashWindow = 16
	cfg.Subscriptions = []Subscription{sub}
	s1 := offlineSource(t, cfg, buf)
	if r := handleSync(t, s1, topic, msg, time.Now()); r.kind != resultMapped {
		t.Fatalf("first: %+v", r)
	}
	// A repeat inside the same run is one event too.
	if r := handleSync(t, s1, topic, msg, time.Now()); r.kind != resultDuplicate {
		t.Fatalf("repeat: %+v", r)
	}
	first := bufferedEvents(t, buf)
	if len(first) != 1 {
		t.Fatalf("%d events, want 1", len(first))
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}

	buf = openBuffer(t, dir)
	s2 := offlineSource(t, cfg, buf)
	if err := buf.ReadState("mes", s2.window.load); err != nil {
		t.Fatal(err)
	}
	if r := handleSync(t, s2, topic, msg, time.Now()); r.kind != resultDuplicate {
		t.Fatalf("redelivery after restart: %+v, want duplicate", r)
	}
	if r := handleSync(t, s2, "mes/DE-01/L2/status", msg, time.Now()); r.kind != resultMapped {
		t.Fatalf("same payload on another topic: %+v, want a new event", r)
	}
	for i := 0; i < 16; i++ {
		handleSync(t, s2, topic, []byte(fmt.Sprintf(`{"order":"PO-%d","status":"x"}`, 100+i)), time.Now())
	}
	if r := handleSync(t, s2, topic, msg, time.Now()); r.kind != resultMapped {
		t.Fatalf("after the window moved on: %+v, want a new event", r)
	}
	evs := bufferedEvents(t, buf)
	if len(evs) != 1+1+16+1 {
		t.Fatalf("%d events, want 19", len(evs))
	}
	if evs[len(evs)-1].GetId() == first[0].GetId() {
		t.Error("a message outside the window got the old id")
	}
}

func TestFailoverAndReconnect(t *testing.T) {
	mbA, addrA := startBroker(t)
	mbB, addrB := startBroker(t)
	buf := openBuffer(t, t.TempDir())
	cfg := baseConfig(addrA, completionSub())
	// A dead address first: the source fails over to the next broker.
	cfg.Brokers = []string{"tcp://127.0.0.1:1", "tcp://" + addrA, "tcp://" + addrB}
	cfg.ConnectTimeout = 500 * time.Millisecond
	s, reg := testSource(t, cfg, buf, t.TempDir())
	waitRunning(t, s)
	publish(t, testPublisher(t, addrA), "mes/DE-01/L1/completion", 1, false, completionJSON("a-1"))
	eventually(t, 5*time.Second, "message through broker A", func() bool { return len(bufferedEvents(t, buf)) == 1 })

	closeBroker(mbA)
	eventually(t, 10*time.Second, "reconnected to broker B", func() bool {
		return s.Health().State == source.StateRunning && metricValue(t, reg, "plantsync_agent_mqtt_reconnects_total") >= 1
	})
	// B is a new broker without a session: a message published before the
	// source has subscribed there is (correctly) delivered to nobody.
	eventually(t, 10*time.Second, "subscribed on broker B", func() bool {
		return len(mbB.Topics.Subscribers("mes/DE-01/L1/completion").Subscriptions) > 0
	})
	publish(t, testPublisher(t, addrB), "mes/DE-01/L1/completion", 1, false, completionJSON("b-1"))
	eventually(t, 5*time.Second, "message through broker B", func() bool { return len(bufferedEvents(t, buf)) == 2 })
}

func TestTLSClientCertAndPasswordFile(t *testing.T) {
	dir := t.TempDir()
	paths, err := pki.Init(filepath.Join(dir, "pki"), pki.InitOptions{Name: "mqtt-test"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := pki.IssueAgent(paths.Dir, pki.AgentRequest{ID: "agent-1", Plant: testPlant})
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	if err := pki.WriteCertFile(clientCert, certPEM); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(clientKey, keyPEM); err != nil {
		t.Fatal(err)
	}
	serverCert, err := tls.LoadX509KeyPair(paths.HubCert, paths.HubKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(paths.CACert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	ledger := &auth.Ledger{Auth: auth.AuthRules{{Username: "plantsync", Password: "s3cret", Allow: true}}}
	_, addr := startBrokerWith(t, "127.0.0.1:0", new(auth.Hook), &auth.Options{Ledger: ledger}, serverTLS)

	pwFile := filepath.Join(dir, "mqtt-password")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PLANTSYNC_TEST_MQTT_USER", "plantsync")
	cfg := baseConfig(addr, completionSub())
	cfg.Brokers = []string{"ssl://" + addr}
	cfg.Username, cfg.Password = "env:PLANTSYNC_TEST_MQTT_USER", "file:"+pwFile
	cfg.TLS = TLSConfig{CA: paths.CACert, Cert: clientCert, Key: clientKey, ServerName: "localhost"}
	s, _ := testSource(t, cfg, &recordingSink{}, t.TempDir())
	waitRunning(t, s)

	// The wrong password is refused by the broker and shows in the health.
	if err := os.WriteFile(pwFile, []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := baseConfig(addr, completionSub())
	bad.Brokers, bad.Username, bad.Password, bad.TLS = cfg.Brokers, cfg.Username, cfg.Password, cfg.TLS
	sb, _ := testSource(t, bad, &recordingSink{}, t.TempDir())
	eventually(t, 5*time.Second, "refused connection in the health", func() bool {
		h := sb.Health()
		return h.State == source.StateDegraded && strings.Contains(h.LastError, "connect")
	})
}

func TestShutdownIsIdempotentAndSafeWithoutStart(t *testing.T) {
	cfg := baseConfig("127.0.0.1:1", completionSub())
	s, err := New(cfg, source.Env{Name: "mes", Plant: testPlant, StateDir: t.TempDir(), Sink: &recordingSink{}})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Started against a broker that is not there, it still stops promptly.
	s2, _ := testSource(t, baseConfig("127.0.0.1:1", completionSub()), &recordingSink{}, t.TempDir())
	eventually(t, 5*time.Second, "degraded while the broker is away", func() bool { return s2.Health().State == source.StateDegraded })
	start := time.Now()
	stopSource(t, s2)
	stopSource(t, s2)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("shutdown took %s", d)
	}
}
