package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/hub"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/internal/faultproxy"
	"github.com/plantsync/plantsync/internal/testkit"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func startHub(t *testing.T, cfg hub.Config) *hub.Hub {
	t.Helper()
	h := hub.New(cfg, quietLogger())
	if err := h.Start(context.Background()); err != nil {
		t.Fatalf("hub start: %v", err)
	}
	return h
}

func stop(t *testing.T, c interface{ Shutdown(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func publisher(t *testing.T, broker string) paho.Client {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano()))
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// messageIDs reads every journaled event and counts them by MES message id.
func messageIDs(t *testing.T, j journal.Journal) map[string]int {
	t.Helper()
	out := map[string]int{}
	var after uint64
	for {
		recs, err := j.Read(after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			var ev pb.Event
			if err := proto.Unmarshal(r.Event, &ev); err != nil {
				t.Fatal(err)
			}
			if id := ev.GetAttributes()["message_id"]; id != "" {
				out[id]++
			}
			after = r.Position
		}
	}
}

// The walking skeleton end to end: MES messages published with QoS 1 reach
// the hub's journal exactly once although the uplink is cut twice and the
// hub restarts mid-stream.
func TestSkeletonExactlyOnceThroughCutsAndHubRestart(t *testing.T) {
	p := testkit.NewPKI(t)
	mb, broker := testkit.Broker(t, "")
	defer func() {
		if !t.Failed() {
			return
		}
		t.Logf("broker info: dropped=%d inflightDropped=%d inflight=%d sent=%d recv=%d", mb.Info.MessagesDropped, mb.Info.InflightDropped, mb.Info.Inflight, mb.Info.MessagesSent, mb.Info.MessagesReceived)
	}()
	hubDir := filepath.Join(t.TempDir(), "hub")
	hcfg := testkit.HubConfig(t, p, hubDir)
	h := startHub(t, hcfg)
	// A restarted hub rebinds the ports it got first.
	hcfg.GRPC.Listen, hcfg.HTTP.Listen = h.GRPCAddr(), h.URL()[len("http://"):]

	proxy, err := faultproxy.New(h.GRPCAddr(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()

	acfg := testkit.AgentConfig(t, p, "agent-1", "DE-01", filepath.Join(t.TempDir(), "agent"), proxy.Addr(), broker)
	a, err := agent.New(acfg, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer stop(t, a)

	testkit.Eventually(t, 10*time.Second, "mqtt source subscribed", func() bool {
		return a.Status().Sources["mes"].State == "running"
	})
	pub := publisher(t, broker)
	const n = 3000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			tok := pub.Publish("mes/DE-01/L1/completion", 1, false, testkit.CompletionJSON(fmt.Sprintf("m-%05d", i)))
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Errorf("publish %d: %v", i, tok.Error())
				return
			}
		}
	}()

	journaled := func() uint64 { return h.Journal().Stats().JournaledTotal }
	testkit.Eventually(t, 20*time.Second, "first events at the hub", func() bool { return journaled() > 300 })
	proxy.Cut()
	time.Sleep(200 * time.Millisecond)
	proxy.Restore()
	testkit.Eventually(t, 20*time.Second, "events after the first cut", func() bool { return journaled() > 1200 })
	proxy.ResetAll()

	stop(t, h)
	h = startHub(t, hcfg)
	defer stop(t, h)

	wg.Wait()
	defer func() {
		if !t.Failed() {
			return
		}
		t.Logf("hub ids=%d journaled=%d dup=%d rej=%d; agent buffer %+v; uplink %+v", len(messageIDs(t, h.Journal())), h.Journal().Stats().JournaledTotal, h.Journal().Stats().DuplicateTotal, h.Journal().Stats().RejectedTotal, a.Buffer().Stats(), a.Status().Uplink)
	}()
	testkit.Eventually(t, 30*time.Second, "all messages at the hub", func() bool {
		return len(messageIDs(t, h.Journal())) == n
	})
	for id, c := range messageIDs(t, h.Journal()) {
		if c != 1 {
			t.Fatalf("message %s journaled %d times", id, c)
		}
	}
	testkit.Eventually(t, 10*time.Second, "agent buffer drained", func() bool { return a.Buffer().Stats().Events == 0 })
	if st := a.Status(); !st.Uplink.Connected || st.Uplink.Reconnects < 2 {
		t.Fatalf("uplink state after cuts: connected=%v reconnects=%d", st.Uplink.Connected, st.Uplink.Reconnects)
	}
	agents := getJSON[struct {
		Agents []struct {
			ID           string `json:"id"`
			Plant        string `json:"plant"`
			Connected    bool   `json:"connected"`
			LastSequence uint64 `json:"last_sequence"`
		} `json:"agents"`
	}](t, h.URL()+"/api/v1/agents")
	if len(agents.Agents) != 1 || agents.Agents[0].ID != "agent-1" || agents.Agents[0].Plant != "DE-01" || agents.Agents[0].LastSequence < n {
		t.Fatalf("/api/v1/agents = %+v", agents)
	}
}
