package e2e

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/internal/testkit"
)

// The MQTT source's content-hash id rule under SIGKILL: MES status messages
// that carry no id of their own are published with QoS 1 while the agent
// process is killed at seeded random moments and restarted. The recent-ids
// window is committed with the buffer, so a redelivered message that was
// committed before the kill gets the id it had, and the hub holds every
// message exactly once. Malformed messages in the same stream are
// quarantined and reported once each, while the good ones keep flowing.
// (Messages with their own ids: crash_test.go.)
func TestCrashMQTTContentHashExactlyOnce(t *testing.T) {
	const (
		n           = 1500
		kills       = 10
		publishSpan = 4 * time.Second
		topic       = "mes/DE-01/L1/status"
	)
	rng := rand.New(rand.NewPCG(seedFromEnv(t, 20261128), 0x2545f4914f6cdd1d))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
	binaries(t)
	began := time.Now()

	p := testkit.NewPKI(t)
	mb, broker := testkit.Broker(t, "")
	dir := t.TempDir()
	hub := newHubProc(t, p, filepath.Join(dir, "hub"))
	ag := newMQTTAgentProc(t, p, "agent-ch", "DE-01", filepath.Join(dir, "agent"), hub.GRPC, map[string]any{
		"name": "mes", "type": "mqtt",
		"brokers":       []string{"tcp://" + broker},
		"client_id":     "plantsync-agent-ch",
		"clean_session": false,
		"subscriptions": []map[string]any{{
			"topic": "mes/{plant}/{line}/status", "event_type": "production.order.status", "content_hash": true,
			"fields":     map[string]any{"work_center": map[string]string{"capture": "line"}},
			"attributes": map[string]any{"order": map[string]string{"path": "order"}},
		}},
	})
	deliveries := countDeliveries(t, mb, ag.ClientID)
	hub.Start()
	ag.Start()
	epoch := ag.WaitRunning(20 * time.Second).Buffer.Epoch

	good := func(i int) []byte { return fmt.Appendf(nil, `{"order":"PO-%05d","status":"released"}`, i) }
	isBad := func(i int) bool { return i%100 == 37 }
	bad := func(i int) []byte { return fmt.Appendf(nil, `{"order":"PO-%05d","status":`, i) }
	wantBad := 0
	for i := range n {
		if isBad(i) {
			wantBad++
		}
	}

	pub := startGatedPublisher(t, broker, topic, n, publishSpan, func(i int) []byte {
		if isBad(i) {
			return bad(i)
		}
		return good(i)
	})

	hitRunning := 0
	for k := range kills {
		time.Sleep(between(10*time.Millisecond, 450*time.Millisecond))
		state, lastSeq := "starting", uint64(0)
		if s, err := ag.Status(); err == nil {
			state, lastSeq = string(s.Sources["mes"].State), s.Buffer.LastSequence
			if state == "running" {
				hitRunning++
			}
		}
		ag.Kill()
		t.Logf("kill %2d at %5.2fs: published %4d, agent %s at sequence %d", k+1, time.Since(began).Seconds(), pub.published.Load(), state, lastSeq)
		time.Sleep(between(0, 100*time.Millisecond))
		pub.restartAgent(t, mb, deliveries, ag)
	}
	if err := <-pub.done; err != nil {
		t.Fatal(err)
	}
	if hitRunning < kills/2 {
		t.Fatalf("only %d of %d kills hit an agent whose source was running", hitRunning, kills)
	}
	ag.WaitRunning(20 * time.Second)
	final := ag.WaitStatus(30*time.Second, "broker and agent buffer drained", func(s agent.Status) error {
		if in := brokerInflight(mb, ag.ClientID); len(in) > 0 {
			return fmt.Errorf("broker holds %d messages the agent has not acknowledged", len(in))
		}
		if s.Buffer.Events != 0 || s.Uplink.AckedThrough != s.Buffer.LastSequence {
			return fmt.Errorf("agent buffer holds %d events, hub acked through %d of %d", s.Buffer.Events, s.Uplink.AckedThrough, s.Buffer.LastSequence)
		}
		return nil
	})
	if final.Buffer.Epoch != epoch {
		t.Fatalf("agent epoch changed from %s to %s: a kill lost the buffer", epoch, final.Buffer.Epoch)
	}

	events, err := hubEvents(hub, "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	if rejected, err := hubEvents(hub, "/api/v1/rejected"); err != nil || len(rejected) > 0 {
		t.Fatalf("hub rejected %d events (%v)", len(rejected), err)
	}
	count := map[string]int{}
	errorsAtHub := 0
	for _, e := range events {
		switch e.Event.Type {
		case "production.order.status":
			count[e.Event.Attributes["order"]]++
		case "source.error":
			errorsAtHub++
		default:
			t.Fatalf("unexpected event type %s at position %d", e.Event.Type, e.Position)
		}
	}
	var missing, dup []string
	for i := range n {
		if isBad(i) {
			continue
		}
		id := fmt.Sprintf("PO-%05d", i)
		switch c := count[id]; {
		case c == 0:
			missing = append(missing, id)
		case c > 1:
			dup = append(dup, fmt.Sprintf("%s×%d", id, c))
		}
	}
	if len(missing) > 0 || len(dup) > 0 || len(count) != n-wantBad {
		t.Fatalf("hub holds %d distinct orders of %d; missing %d %v; duplicated %d %v", len(count), n-wantBad, len(missing), firstFew(missing), len(dup), firstFew(dup))
	}
	if errorsAtHub != wantBad {
		t.Fatalf("hub holds %d source.error events, want %d (one per malformed message)", errorsAtHub, wantBad)
	}
	dups, _ := ag.metric(`plantsync_agent_mqtt_duplicates_total{source="mes"}`)
	t.Logf("epoch %s: %d messages exactly once, %d malformed reported once each; %.0f content-hash window hits in the last run; took %.1fs",
		epoch, n-wantBad, wantBad, dups, time.Since(began).Seconds())
}

// newMQTTAgentProc is an agent process with one source given as its config
// map (newAgentProc's source has the skeleton's fixed mapping).
func newMQTTAgentProc(t testing.TB, p *testkit.PKI, id, plant, stateDir, hubAddr string, src map[string]any) *agentProc {
	t.Helper()
	agentBin, _ := binaries(t)
	cert, key := p.Agent(t, id, plant)
	clientID, _ := src["client_id"].(string)
	a := &agentProc{Admin: testkit.FreePort(t), StateDir: stateDir, ClientID: clientID}
	cfgPath := filepath.Join(stateDir+"-config", "agent.yaml")
	writeYAML(t, cfgPath, map[string]any{
		"agent": map[string]string{"id": id, "plant": plant, "state_dir": stateDir},
		"uplink": map[string]any{
			"hub":             hubAddr,
			"tls":             map[string]string{"ca": p.Paths.CACert, "cert": cert, "key": key, "server_name": "localhost"},
			"backoff_initial": "50ms",
			"backoff_max":     "500ms",
			"status_interval": "500ms",
		},
		"sources": []map[string]any{src},
		"metrics": map[string]string{"listen": a.Admin},
		"log":     map[string]string{"level": "info", "format": "json"},
	})
	a.proc = newProc(t, "plantsync-agent", agentBin, "run", "-config", cfgPath)
	return a
}
