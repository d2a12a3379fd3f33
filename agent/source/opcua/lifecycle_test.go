package opcua

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/agent/source/opcua/internal/uatest"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
	"google.golang.org/protobuf/proto"
)

// A browse rule with a wildcard picks up a machine added to the server
// while the source runs, without a restart, and its capture names it.
func TestBrowseRulePicksUpMachineAddedAtRuntime(t *testing.T) {
	t.Parallel()
	srv := startServer(t, 2)
	cfg := baseConfig(srv.Endpoint())
	cfg.Browse = []BrowseRule{{Path: "Objects/Plant/L1/*/State", Mapping: Mapping{EventType: "machine.state",
		Fields: map[string]string{"work_center": "L1", "machine": "{1}", "state": "{value}"}}}}
	sink := &memSink{}
	h := startSource(t, cfg, sink, "")
	eventually(t, waitFor, "both machines", func() bool { return len(sink.find(stateNode(1))) > 0 && len(sink.find(stateNode(2))) > 0 })
	if n := len(h.src.Items()); n != 2 {
		t.Fatalf("items = %v, want the two State variables", h.src.Items())
	}

	addMachine(t, srv.Namespace(), 3)
	must(t, srv.Namespace().Set(machineKey(3)+".State", "running"))
	eventually(t, waitFor, "the new machine's state", func() bool {
		for _, ev := range sink.find(stateNode(3)) {
			if ev.GetMachineState().GetState() == "running" {
				return true
			}
		}
		return false
	})
	ev := sink.find(stateNode(3))[0]
	if ev.GetMachineState().GetMachine() != "M3" || ev.GetMachineState().GetWorkCenter() != "L1" {
		t.Fatalf("capture not applied: %v", ev.GetMachineState())
	}

	// A machine taken away leaves the subscription at the next expansion.
	srv.Namespace().Remove(machineKey(2))
	eventually(t, waitFor, "the removed machine dropped", func() bool { return len(h.src.Items()) == 2 })
	for _, it := range h.src.Items() {
		if it.Node == stateNode(2) {
			t.Fatalf("removed machine still monitored: %v", h.src.Items())
		}
	}
}

// The server restarts on the same port mid-stream: the source rebuilds its
// session and every monitored item, and values keep arriving for all.
func TestServerRestartResumesEveryItem(t *testing.T) {
	t.Parallel()
	const machines = 20
	srv := startServer(t, machines)
	cfg := baseConfig(srv.Endpoint())
	cfg.Subscription.MaxItemsPerCall = 7 // several chunks
	cfg.Subscription.MaxItemsPerSubscription = 15
	for i := 1; i <= machines; i++ {
		cfg.Nodes = append(cfg.Nodes, NodeConfig{NodeID: tempNode(i)}, NodeConfig{NodeID: uatest.NodeID(machineKey(i) + ".Count")})
	}
	sink := &memSink{}
	h := startSource(t, cfg, sink, "")
	eventually(t, waitFor, "running", func() bool { return h.src.Health().State == source.StateRunning })
	if got := value(t, h.src.m.items.WithLabelValues("good")); got != 2*machines {
		t.Fatalf("good items = %v", got)
	}
	// 40 items at 15 per subscription, created 7 per call.
	if got := value(t, h.src.m.subscriptions); got != 3 {
		t.Fatalf("subscriptions = %v, want 3", got)
	}

	addr, ns := srv.Addr(), srv.Namespace()
	for i := 1; i <= machines; i++ {
		must(t, ns.Set(machineKey(i)+".Count", uint32(1)))
	}
	eventually(t, waitFor, "first values", func() bool { return countValue(sink, machines, 1) == machines })

	must(t, srv.Close())
	srv2, err := uatest.Start(uatest.Options{Listen: addr, Identity: serverIdentity(t), Namespace: ns, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv2.Close() })
	eventually(t, waitFor, "reconnect", func() bool {
		return value(t, h.src.m.reconnects) >= 1 && h.src.Health().State == source.StateRunning
	})
	for i := 1; i <= machines; i++ {
		must(t, ns.Set(machineKey(i)+".Count", uint32(2)))
	}
	eventually(t, waitFor, "every item resumed", func() bool { return countValue(sink, machines, 2) == machines })
	if got := value(t, h.src.m.items.WithLabelValues("good")); got != 2*machines {
		t.Fatalf("good items after restart = %v", got)
	}
	if got := value(t, h.src.m.subscriptions); got != 3 {
		t.Fatalf("subscriptions after restart = %v, want 3", got)
	}
}

// countValue counts machines whose Count node delivered v.
func countValue(sink *memSink, machines int, v uint64) int {
	n := 0
	for i := 1; i <= machines; i++ {
		for _, ev := range sink.find(uatest.NodeID(machineKey(i) + ".Count")) {
			if ev.GetObservation().GetUintValue() == v {
				n++
				break
			}
		}
	}
	return n
}

// A configured node the server does not know is marked bad and reported,
// the others flow; once the node exists it is picked up by the retry.
func TestUnknownNodeBadOthersFlow(t *testing.T) {
	t.Parallel()
	srv := startServer(t, 1)
	cfg := baseConfig(srv.Endpoint())
	missing := uatest.NodeID(machineKey(2) + ".Temp")
	cfg.Nodes = []NodeConfig{{NodeID: tempNode(1)}, {NodeID: missing}}
	sink := &memSink{}
	h := startSource(t, cfg, sink, "")
	eventually(t, waitFor, "bad item", func() bool { return value(t, h.src.m.items.WithLabelValues("bad")) == 1 })
	eventually(t, waitFor, "bad-quality event", func() bool {
		for _, ev := range sink.find(missing) {
			if ev.GetObservation().GetStatusCode() == 0x80340000 {
				return true
			}
		}
		return false
	})
	must(t, srv.Namespace().Set(machineKey(1)+".Temp", 50.0))
	eventually(t, waitFor, "the good node flows", func() bool {
		for _, ev := range sink.find(tempNode(1)) {
			if ev.GetObservation().GetDoubleValue() == 50 {
				return true
			}
		}
		return false
	})
	var reason string
	for _, it := range h.src.Items() {
		if it.Node == missing {
			reason = it.Reason
		}
	}
	if reason != "BadNodeIdUnknown" {
		t.Fatalf("bad item reason = %q; items %v", reason, h.src.Items())
	}
	rec := httptest.NewRecorder()
	h.src.Admin().ServeHTTP(rec, httptest.NewRequest("GET", "/items", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"node":"`+missing+`","state":"bad","reason":"BadNodeIdUnknown"`) {
		t.Fatalf("GET /items = %d %s", rec.Code, rec.Body.String())
	}
	// Repeated retries must not repeat the bad-quality event endlessly.
	time.Sleep(4 * cfg.RetryBadItems)
	if n := len(sink.find(missing)); n > 1 {
		t.Fatalf("%d bad-quality events for one missing node", n)
	}

	addMachine(t, srv.Namespace(), 2)
	must(t, srv.Namespace().Set(machineKey(2)+".Temp", 61.0))
	eventually(t, waitFor, "the node, once created, flows", func() bool {
		for _, ev := range sink.find(missing) {
			if ev.GetObservation().GetDoubleValue() == 61 {
				return true
			}
		}
		return false
	})
	eventually(t, waitFor, "item good again", func() bool { return value(t, h.src.m.items.WithLabelValues("bad")) == 0 })
}

// gopcua's server ignores the deadband filter; the agent applies it.
func TestDeadbandAppliedInAgent(t *testing.T) {
	t.Parallel()
	srv := startServer(t, 1)
	cfg := baseConfig(srv.Endpoint())
	cfg.Nodes = []NodeConfig{{NodeID: tempNode(1), ItemOptions: ItemOptions{Deadband: Deadband{Type: DeadbandAbsolute, Value: 1}}}}
	sink := &memSink{}
	startSource(t, cfg, sink, "")
	eventually(t, waitFor, "initial value", func() bool { return len(sink.find(tempNode(1))) == 1 })
	for _, v := range []float64{20.5, 20.9, 22.0, 22.5, 21.5, 30} {
		must(t, srv.Namespace().Set(machineKey(1)+".Temp", v))
		time.Sleep(120 * time.Millisecond) // gopcua keeps one value per publishing interval
	}
	eventually(t, waitFor, "last value", func() bool {
		evs := sink.find(tempNode(1))
		return evs[len(evs)-1].GetObservation().GetDoubleValue() == 30
	})
	// gopcua may fold two quick changes into one publishing interval, so
	// check the rule rather than one sequence: no reported value lies
	// within 1.0 of the one reported before it.
	var got []float64
	for _, ev := range sink.find(tempNode(1)) {
		got = append(got, ev.GetObservation().GetDoubleValue())
	}
	for i := 1; i < len(got); i++ {
		if d := got[i] - got[i-1]; d <= 1 && d >= -1 {
			t.Fatalf("values after a deadband of 1.0 = %v: %v is within 1.0 of %v", got, got[i], got[i-1])
		}
	}
	if len(got) < 3 || got[0] != 20 {
		t.Fatalf("values after a deadband of 1.0 = %v, want 20, 22 or 22.5, 30", got)
	}
}

// Under the block policy the source keeps only the latest value per node
// while the buffer is full, counts what it superseded, and writes the
// latest values once the buffer accepts again. The buffer is the real one.
func TestConflationUnderBlock(t *testing.T) {
	t.Parallel()
	srv := startServer(t, 3)
	bcfg := buffer.NewDefaultConfig()
	bcfg.MaxBytes = 64 << 10
	buf, err := buffer.Open(filepath.Join(t.TempDir(), "buffer.db"), bcfg, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = buf.Close() })
	cfg := baseConfig(srv.Endpoint())
	for i := 1; i <= 3; i++ {
		cfg.Nodes = append(cfg.Nodes, NodeConfig{NodeID: uatest.NodeID(machineKey(i) + ".Count")})
	}
	rec := &committedSink{Buffer: buf, latest: map[string]uint64{}}
	h := startSource(t, cfg, rec, "")
	eventually(t, waitFor, "running", func() bool { return h.src.Health().State == source.StateRunning })
	eventually(t, waitFor, "initial values committed", func() bool { return h.src.Appended() == 3 })

	// Fill the buffer with filler events nobody acknowledges.
	filler := make([]*pb.Event, 5)
	for i := range filler {
		filler[i] = &pb.Event{Id: fmt.Sprintf("fill-%d", i), Type: "observation", Attributes: map[string]string{"pad": string(make([]byte, 1500))}}
	}
	// One batch at a time, so hardly any filler waits in the buffer's
	// queue once it blocks.
	for i := 0; !buf.Stats().Blocked; i++ {
		if i > 1000 {
			t.Fatal("buffer never blocked")
		}
		batch := make([]*pb.Event, len(filler))
		for j, e := range filler {
			batch[j] = proto.Clone(e).(*pb.Event)
		}
		done := make(chan struct{})
		must(t, buf.AppendAsync(context.Background(), batch, func(uint64, uint64, error) { close(done) }))
		select {
		case <-done:
		case <-time.After(300 * time.Millisecond):
		}
	}
	eventually(t, waitFor, "pump sees the block", func() bool { return h.src.pump.blocked.Load() })
	committedBefore := h.src.Appended()

	const rounds = 10
	for r := uint32(1); r <= rounds; r++ {
		for i := 1; i <= 3; i++ {
			must(t, srv.Namespace().Set(machineKey(i)+".Count", r))
		}
		time.Sleep(110 * time.Millisecond)
	}
	eventually(t, waitFor, "superseded values counted", func() bool { return value(t, h.src.m.superseded) >= 3*(rounds-2) })
	if n := h.src.pump.pending(); n > 3 {
		t.Fatalf("%d values pending while blocked; want at most one per node (3)", n)
	}
	if h.src.Appended() != committedBefore {
		t.Fatal("the pump appended to a blocked buffer")
	}

	// The hub acknowledges everything: the buffer empties and accepts.
	eventually(t, waitFor, "latest values written", func() bool {
		buf.Ack(buf.Stats().LastSeq)
		return h.src.Appended() >= committedBefore+3
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	latest := rec.latest
	for i := 1; i <= 3; i++ {
		uri := srv.Endpoint() + "#" + uatest.NodeID(machineKey(i)+".Count")
		if latest[uri] != rounds {
			t.Fatalf("latest value of %s in the buffer = %d, want %d (all: %v)", uri, latest[uri], rounds, latest)
		}
	}
}

// Shutdown is idempotent and safe without Start.
func TestShutdownWithoutStart(t *testing.T) {
	cfg := baseConfig("opc.tcp://127.0.0.1:4840")
	cfg.Nodes = []NodeConfig{{NodeID: "ns=2;s=X"}}
	src, err := New(cfg, source.Env{Name: "line1", Sink: &memSink{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		if err := src.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if src.Health().State != source.StateStopped {
		t.Fatalf("health = %v", src.Health())
	}
}

// committedSink is the real buffer, recording the latest value per node of
// what it committed (before the hub's acks delete it).
type committedSink struct {
	*buffer.Buffer
	mu     sync.Mutex
	latest map[string]uint64
}

func (c *committedSink) AppendWithState(ctx context.Context, events []*pb.Event, state []buffer.StateWrite, done buffer.Done) error {
	return c.Buffer.AppendWithState(ctx, events, state, func(first, last uint64, err error) {
		if err == nil {
			c.mu.Lock()
			for _, ev := range events {
				c.latest[ev.GetSource().GetUri()] = ev.GetObservation().GetUintValue()
			}
			c.mu.Unlock()
		}
		done(first, last, err)
	})
}
