package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/internal/testkit"
)

// With drop_oldest and a 64 KiB buffer, an agent whose hub is down drops
// most of a burst of MES messages. Once the hub is up, what it holds and
// what the agent reported lost account for every sequence and every
// message: the journaled sequences and the ranges of the journaled
// buffer.overflow events are disjoint and together cover 1..last exactly,
// and every message is either at the hub (once) or in a reported range.
func TestOverflowDropOldestLossReportedExactly(t *testing.T) {
	const (
		n     = 1500 // about 280 bytes each: the buffer holds some 200
		topic = "mes/DE-01/L1/completion"
	)
	p := testkit.NewPKI(t)
	mb, broker := testkit.Broker(t, "")
	dir := t.TempDir()
	hub := newHubProc(t, p, filepath.Join(dir, "hub"))
	ag := newAgentProc(t, p, agentOptions{
		ID: "agent-1", Plant: "DE-01", StateDir: filepath.Join(dir, "agent"), Hub: hub.GRPC, Broker: broker,
		MaxBytes: 64 << 10, Overflow: "drop_oldest",
	})
	ag.Start()
	epoch := ag.WaitRunning(20 * time.Second).Buffer.Epoch

	pub := publisher(t, broker)
	for i := range n {
		tok := pub.Publish(topic, 1, false, testkit.CompletionJSON(msgID(i)))
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	// The agent has mapped every message and acknowledged each to the
	// broker, so each is committed (and perhaps dropped since).
	var mapped float64
	ag.WaitStatus(20*time.Second, "agent committed every message", func(agent.Status) error {
		var err error
		if mapped, err = ag.metric(`plantsync_agent_mqtt_mapped_total{source="mes"}`); err != nil {
			return err
		}
		if mapped < n {
			return fmt.Errorf("agent mapped %.0f of %d messages", mapped, n)
		}
		if in := brokerInflight(mb, ag.ClientID); len(in) > 0 {
			return fmt.Errorf("broker holds %d messages the agent has not acknowledged", len(in))
		}
		return nil
	})
	// The status WaitStatus returns was read before its checks passed, so
	// the last commits may postdate it: read it again now that all are in.
	before, err := ag.Status()
	if err != nil {
		t.Fatal(err)
	}
	if before.Uplink.Connected || before.Buffer.DroppedTotal == 0 {
		t.Fatalf("before the hub starts: uplink connected=%v, dropped %d; want disconnected with drops", before.Uplink.Connected, before.Buffer.DroppedTotal)
	}
	committed, err := ag.metric("plantsync_agent_buffer_committed_events_total")
	if err != nil {
		t.Fatal(err)
	}

	hub.Start()
	final := ag.WaitStatus(30*time.Second, "agent buffer drained to the hub", func(s agent.Status) error {
		if s.Buffer.Events != 0 || s.Uplink.AckedThrough != s.Buffer.LastSequence {
			return fmt.Errorf("buffer holds %d events, hub acked through %d of %d", s.Buffer.Events, s.Uplink.AckedThrough, s.Buffer.LastSequence)
		}
		return nil
	})
	last := final.Buffer.LastSequence
	if final.Buffer.Epoch != epoch || last != before.Buffer.LastSequence || final.Buffer.DroppedTotal != before.Buffer.DroppedTotal {
		t.Fatalf("agent changed while draining: epoch %s→%s, last %d→%d, dropped %d→%d", epoch, final.Buffer.Epoch,
			before.Buffer.LastSequence, last, before.Buffer.DroppedTotal, final.Buffer.DroppedTotal)
	}

	events, err := hubEvents(hub, "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	if rejected, err := hubEvents(hub, "/api/v1/rejected"); err != nil || len(rejected) > 0 {
		t.Fatalf("hub rejected %d events (%v)", len(rejected), err)
	}
	journaled := map[uint64]bool{}
	dropped := map[uint64]bool{}
	ids := map[string]int{}
	reports := 0
	for _, e := range events {
		if e.Producer != "agent:agent-1" || e.Epoch != epoch {
			t.Fatalf("event at position %d from %s epoch %s; want agent:agent-1 epoch %s", e.Position, e.Producer, e.Epoch, epoch)
		}
		s := e.Event.Sequence
		if journaled[s] {
			t.Fatalf("sequence %d journaled twice", s)
		}
		journaled[s] = true
		switch e.Event.Type {
		case "production.completion":
			ids[e.Event.Attributes["message_id"]]++
		case "buffer.overflow":
			reports++
			if e.Event.BufferOverflow == nil || e.Event.BufferOverflow.Policy != "drop_oldest" || e.Event.Plant != "DE-01" {
				t.Fatalf("overflow report at sequence %d is malformed: %+v", s, e.Event)
			}
			for _, r := range e.Event.BufferOverflow.Dropped {
				if r.First == 0 || r.First > r.Last {
					t.Fatalf("overflow report at sequence %d has range %d..%d", s, r.First, r.Last)
				}
				for q := r.First; q <= r.Last; q++ {
					if dropped[q] {
						t.Fatalf("sequence %d reported dropped twice (again at sequence %d)", q, s)
					}
					dropped[q] = true
				}
			}
		default:
			t.Fatalf("unexpected event type %q at sequence %d", e.Event.Type, s)
		}
	}

	// Journaled and reported-dropped sequences are disjoint and cover
	// 1..last with nothing left over: no loss goes unreported.
	var both, neither []uint64
	for s := uint64(1); s <= last; s++ {
		switch {
		case journaled[s] && dropped[s]:
			both = append(both, s)
		case !journaled[s] && !dropped[s]:
			neither = append(neither, s)
		}
	}
	if len(both) > 0 || len(neither) > 0 {
		t.Fatalf("sequences 1..%d: %d both journaled and reported dropped %v; %d neither %v", last, len(both), firstFew(both), len(neither), firstFew(neither))
	}
	for s := range journaled {
		if s < 1 || s > last {
			t.Fatalf("journaled sequence %d outside 1..%d", s, last)
		}
	}
	for s := range dropped {
		if s < 1 || s > last {
			t.Fatalf("reported dropped sequence %d outside 1..%d", s, last)
		}
	}
	if uint64(len(dropped)) != final.Buffer.DroppedTotal {
		t.Fatalf("hub was told of %d dropped sequences; the agent counts %d", len(dropped), final.Buffer.DroppedTotal)
	}

	// Which dropped sequences were messages: every sequence is either one
	// of the n messages or an overflow report the buffer wrote itself, so
	// the reports written are last-n (checked against what the agent's
	// metrics say it mapped and committed), and the dropped reports are
	// those not journaled.
	if mapped != n || committed != float64(last) {
		t.Fatalf("agent mapped %.0f messages (want %d) and committed %.0f events (want %d)", mapped, n, committed, last)
	}
	written := int(last) - n
	droppedReports := written - reports
	droppedMessages := len(dropped) - droppedReports
	for id, c := range ids {
		if c != 1 {
			t.Fatalf("message %s journaled %d times", id, c)
		}
	}
	t.Logf("sequences 1..%d: %d messages and %d of %d overflow reports journaled; %d sequences reported dropped (%d messages, %d reports)",
		last, len(ids), reports, written, len(dropped), droppedMessages, droppedReports)
	if len(ids)+droppedMessages != n {
		t.Fatalf("%d messages at the hub + %d reported dropped = %d; published %d", len(ids), droppedMessages, len(ids)+droppedMessages, n)
	}
	// The buffer overflowed again and again, and the newest messages
	// survived: drop_oldest never drops what arrived last.
	if written < 3 || droppedMessages < n/2 {
		t.Fatalf("only %d overflow reports written and %d messages dropped: the buffer did not overflow several times", written, droppedMessages)
	}
	if ids[msgID(n-1)] != 1 {
		t.Fatalf("the last message %s is not at the hub", msgID(n-1))
	}
}

// A buffer file cut short (a torn write, a full disk, a bad copy) is
// detected when the agent starts: it exits non-zero naming the file and
// saying it is corrupt and truncated, and leaves the file as it was, never
// emptying it to start afresh.
func TestTornBufferFileDetectedOnStart(t *testing.T) {
	const events = 5000
	p := testkit.NewPKI(t)
	dir := t.TempDir()
	// The hub is down throughout: its port was free a moment ago.
	hubAddr := testkit.FreePort(t)
	first := newAgentProc(t, p, agentOptions{ID: "agent-1", Plant: "DE-01", StateDir: filepath.Join(dir, "agent"), Hub: hubAddr, Generator: events})
	first.Start()
	epoch := first.WaitStatus(20*time.Second, "generated events buffered", func(s agent.Status) error {
		if s.Buffer.Events != events {
			return fmt.Errorf("buffer holds %d of %d events", s.Buffer.Events, events)
		}
		return nil
	}).Buffer.Epoch
	if code := first.Stop(20 * time.Second); code != 0 {
		t.Fatalf("agent exited %d after SIGTERM", code)
	}
	pristinePath := filepath.Join(dir, "agent", "buffer.db")
	pristine, err := os.ReadFile(pristinePath)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt grows its file ahead of use, so half the file may hold every
	// page in use: cut inside the pages its metadata says it uses.
	used := boltUsedSize(t, pristinePath)

	// The intact file opens: what the cut files fail on is the cut.
	first.Start()
	first.WaitStatus(20*time.Second, "agent running on its intact buffer", func(s agent.Status) error {
		if s.Buffer.Epoch != epoch || s.Buffer.LastSequence < events {
			return fmt.Errorf("buffer epoch %s at sequence %d; want epoch %s at %d or beyond", s.Buffer.Epoch, s.Buffer.LastSequence, epoch, events)
		}
		return nil
	})
	if code := first.Stop(20 * time.Second); code != 0 {
		t.Fatalf("agent exited %d after SIGTERM", code)
	}

	for _, tc := range []struct {
		name string
		size int64
	}{
		{"half", used / 2},
		{"torn last page", used - 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "agent")
			if err := os.MkdirAll(state, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(state, "buffer.db")
			if err := os.WriteFile(path, pristine[:tc.size], 0o600); err != nil {
				t.Fatal(err)
			}
			st0, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			sum0 := sha256.Sum256(pristine[:tc.size])

			ag := newAgentProc(t, p, agentOptions{ID: "agent-1", Plant: "DE-01", StateDir: state, Hub: hubAddr, Generator: events})
			ag.Start()
			code, out := ag.Wait(20 * time.Second)
			if code == 0 {
				t.Fatalf("agent exited 0 on a buffer file cut to %d of %d bytes:\n%s", tc.size, len(pristine), out)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			t.Logf("agent exited %d: %s", code, lines[len(lines)-1])
			for _, want := range []string{path, "corrupt", "truncated"} {
				if !strings.Contains(out, want) {
					t.Errorf("agent output does not mention %q:\n%s", want, out)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			st1, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(raw) != sum0 || !st1.ModTime().Equal(st0.ModTime()) || st1.Mode() != st0.Mode() {
				t.Fatalf("agent changed the damaged file: %d bytes, was %d; modified %s, was %s", len(raw), tc.size, st1.ModTime(), st0.ModTime())
			}
			if bytes.Contains([]byte(out), []byte("agent started")) {
				t.Fatalf("agent reported it started on a damaged buffer:\n%s", out)
			}
		})
	}
}

// boltUsedSize is the size a bbolt file's metadata says it has (its
// high-water page times the page size).
func boltUsedSize(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var size int64
	if err := db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return size
}
