package e2e

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/internal/testkit"
)

// The crash test with real processes: while n MES messages with
// known ids flow over MQTT (QoS 1, persistent session), the agent process
// is SIGKILLed at seeded random moments and restarted, and the hub process
// is stopped and restarted twice in between. Afterwards the hub holds each
// message exactly once and has every sequence of the agent's one epoch.
func TestCrashAgentKilledHubRestartedExactlyOnce(t *testing.T) {
	const (
		n           = 3000
		kills       = 22
		publishSpan = 8 * time.Second // kills are spread over the publishing
		topic       = "mes/DE-01/L1/completion"
	)
	rng := rand.New(rand.NewPCG(seedFromEnv(t, 20261127), 0x9e3779b97f4a7c15))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
	binaries(t)
	began := time.Now()

	p := testkit.NewPKI(t)
	mb, broker := testkit.Broker(t, "")
	dir := t.TempDir()
	hub := newHubProc(t, p, filepath.Join(dir, "hub"))
	ag := newAgentProc(t, p, agentOptions{ID: "agent-1", Plant: "DE-01", StateDir: filepath.Join(dir, "agent"), Hub: hub.GRPC, Broker: broker})
	deliveries := countDeliveries(t, mb, ag.ClientID)
	hub.Start()
	ag.Start()
	epoch := ag.WaitRunning(20 * time.Second).Buffer.Epoch

	pub := startGatedPublisher(t, broker, topic, n, publishSpan, func(i int) []byte { return testkit.CompletionJSON(msgID(i)) })

	// The hub goes down (SIGTERM) at two seeded kills and stays down for
	// the next one or two, so the agent also restarts and is killed while
	// it cannot deliver. It is stopped while the agent is down: with an
	// agent stream open, the hub's gRPC GracefulStop waits for the stream
	// to end, which an agent never does by itself, so a SIGTERM takes the
	// whole 30 s stop timeout (reported; see hub/ingest Server.Shutdown).
	hubStopAt := map[int]int{ // kill index -> kills to stay down
		2 + rng.IntN(kills/2-5):       1 + rng.IntN(2),
		kills/2 + rng.IntN(kills/2-4): 1 + rng.IntN(2),
	}
	hubDownUntil, hubRestarts, hitRunning := -1, 0, 0
	for k := range kills {
		// A seeded moment after the restart: early ones land while the
		// agent opens its buffer or connects, later ones mid-stream.
		time.Sleep(between(10*time.Millisecond, 500*time.Millisecond))
		state, lastSeq := "starting", uint64(0)
		if s, err := ag.Status(); err == nil {
			state, lastSeq = string(s.Sources["mes"].State), s.Buffer.LastSequence
			if state == "running" {
				hitRunning++
			}
		}
		ag.Kill()
		t.Logf("kill %2d at %5.2fs: published %4d, agent %s at sequence %d", k+1, time.Since(began).Seconds(), pub.published.Load(), state, lastSeq)
		if down, ok := hubStopAt[k]; ok {
			stopping := time.Now()
			if code := hub.Stop(20 * time.Second); code != 0 {
				t.Fatalf("hub exited %d after SIGTERM", code)
			}
			hubDownUntil = k + down
			t.Logf("hub stopped in %s at kill %d, down for %d more kills", time.Since(stopping).Round(time.Millisecond), k+1, down)
		}
		// Down for a while: the broker queues for the session meanwhile.
		time.Sleep(between(0, 100*time.Millisecond))
		pub.restartAgent(t, mb, deliveries, ag)
		if k == hubDownUntil {
			hub.Start()
			hubRestarts++
			t.Logf("hub restarted at %.2fs", time.Since(began).Seconds())
		}
	}
	if err := <-pub.done; err != nil {
		t.Fatal(err)
	}
	t.Logf("publishing and %d kills done at %.2fs; %d kills hit a running source; %d hub restarts; broker redeliveries so far %d",
		kills, time.Since(began).Seconds(), hitRunning, hubRestarts, deliveries.redeliveries())
	if hubRestarts != 2 {
		t.Fatalf("hub restarted %d times, want 2", hubRestarts)
	}
	// Kills that only ever hit a starting agent would prove little.
	if hitRunning < kills/2 {
		t.Fatalf("only %d of %d kills hit an agent whose source was running", hitRunning, kills)
	}

	// Drained: the broker holds nothing unacknowledged for the agent (so
	// every message is committed in its buffer) and the buffer is empty
	// (so the hub acknowledged every sequence).
	ag.WaitRunning(20 * time.Second)
	final := ag.WaitStatus(30*time.Second, "broker and agent buffer drained", func(s agent.Status) error {
		if in := brokerInflight(mb, ag.ClientID); len(in) > 0 {
			return fmt.Errorf("broker holds %d messages the agent has not acknowledged: %v", len(in), firstFew(in))
		}
		if s.Buffer.Events != 0 || s.Uplink.AckedThrough != s.Buffer.LastSequence {
			return fmt.Errorf("agent buffer holds %d events, hub acked through %d of %d", s.Buffer.Events, s.Uplink.AckedThrough, s.Buffer.LastSequence)
		}
		return nil
	})
	if final.Buffer.Epoch != epoch {
		t.Fatalf("agent epoch changed from %s to %s: a kill lost the buffer", epoch, final.Buffer.Epoch)
	}
	last := final.Buffer.LastSequence

	events, err := hubEvents(hub, "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	if rejected, err := hubEvents(hub, "/api/v1/rejected"); err != nil || len(rejected) > 0 {
		t.Fatalf("hub rejected %d events (%v)", len(rejected), err)
	}

	// Each of the n message ids exactly once.
	want := make(map[string]bool, n)
	for i := range n {
		want[msgID(i)] = true
	}
	count := map[string]int{}
	seqs := make(map[uint64]bool, len(events))
	for _, e := range events {
		if e.Producer != "agent:agent-1" || e.Epoch != epoch || e.Event.Type != "production.completion" {
			t.Fatalf("unexpected event at position %d: producer %s epoch %s type %s", e.Position, e.Producer, e.Epoch, e.Event.Type)
		}
		id := e.Event.Attributes["message_id"]
		if !want[id] {
			t.Fatalf("event at position %d has message id %q, which was never published", e.Position, id)
		}
		count[id]++
		if seqs[e.Event.Sequence] {
			t.Fatalf("sequence %d journaled twice", e.Event.Sequence)
		}
		seqs[e.Event.Sequence] = true
	}
	var missing, dup []string
	for id := range want {
		switch c := count[id]; {
		case c == 0:
			missing = append(missing, id)
		case c > 1:
			dup = append(dup, fmt.Sprintf("%s×%d", id, c))
		}
	}
	slices.Sort(missing)
	slices.Sort(dup)
	if len(missing) > 0 || len(dup) > 0 {
		for _, id := range firstFew(missing) {
			t.Logf("missing %s: the broker wrote it to the agent %d times; trail %v", id, deliveries.count(id), deliveries.trailOf(id))
		}
		t.Fatalf("hub holds %d of %d ids; missing %d %v; duplicated %d %v", len(count), n, len(missing), firstFew(missing), len(dup), firstFew(dup))
	}

	// Every sequence of the epoch reached the hub: its watermark is the
	// agent's last sequence, and each sequence it did not journal is one it
	// dropped as an id duplicate (a message the broker redelivered after a
	// kill, committed a second time by the agent). The hub counts those per
	// epoch, so the account must be exact: no sequence is unaccounted for.
	ha, err := hubAgentState(hub, "agent-1")
	if err != nil {
		t.Fatal(err)
	}
	if ha.Epoch != epoch || ha.LastSequence != last {
		t.Fatalf("hub has agent-1 at epoch %s sequence %d; the agent is at %s sequence %d", ha.Epoch, ha.LastSequence, epoch, last)
	}
	for s := range seqs {
		if s < 1 || s > last {
			t.Fatalf("journaled sequence %d outside 1..%d", s, last)
		}
	}
	var gaps []uint64
	for s := uint64(1); s <= last; s++ {
		if !seqs[s] {
			gaps = append(gaps, s)
		}
	}
	redelivered := deliveries.redeliveries()
	t.Logf("epoch %s: sequences 1..%d, %d journaled, %d dropped by event id at the hub %v; the broker redelivered %d messages; took %.1fs",
		epoch, last, len(seqs), len(gaps), firstFew(gaps), redelivered, time.Since(began).Seconds())
	if uint64(len(gaps)) != ha.DuplicateEvents || ha.RejectedEvents != 0 {
		t.Fatalf("%d sequences not journaled but the hub dropped %d as id duplicates (and rejected %d): sequences were lost: %v",
			len(gaps), ha.DuplicateEvents, ha.RejectedEvents, firstFew(gaps))
	}
	if len(gaps) > redelivered {
		t.Fatalf("%d sequences dropped as duplicates but the broker redelivered only %d messages", len(gaps), redelivered)
	}
}
