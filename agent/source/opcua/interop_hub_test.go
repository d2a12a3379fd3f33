//go:build interop

package opcua_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/agent/source/opcua"
	"github.com/plantsync/plantsync/hub"
	"github.com/plantsync/plantsync/internal/testkit"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// An alarm raised on the node-opcua server travels agent → uplink → hub
// and is journaled as a machine.alarm event; clearing it sends another.
func TestInteropOPCUAAlarmReachesHub(t *testing.T) {
	srv := opcua.StartNodeServer(t, opcua.NodeServerOptions{})
	p := testkit.NewPKI(t)
	h := hub.New(testkit.HubConfig(t, p, filepath.Join(t.TempDir(), "hub")), slog.New(slog.DiscardHandler))
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer stop(t, h)

	acfg := testkit.AgentConfig(t, p, "agent-1", "DE-01", filepath.Join(t.TempDir(), "agent"), h.GRPCAddr(), "")
	oc := opcua.NewDefaultConfig()
	oc.Common = source.Common{Name: "line1", Type: "opcua"}
	oc.Endpoint = srv.Endpoint
	oc.Security = opcua.SecurityConfig{Policy: opcua.PolicyNone, Mode: opcua.ModeNone}
	oc.Subscription.PublishingInterval = 100 * time.Millisecond
	oc.Events = []opcua.EventConfig{{Notifier: "i=2253", Fields: map[string]string{"work_center": "L1"}}}
	acfg.Sources = []agent.SourceEntry{{Common: oc.Common, Config: oc}}
	a, err := agent.New(acfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer stop(t, a)
	testkit.Eventually(t, 30*time.Second, "opc ua source running", func() bool {
		return a.Status().Sources["line1"].State == "running"
	})

	srv.Do(t, "alarm on")
	defer func() {
		if t.Failed() {
			t.Logf("agent status %+v; hub journal %+v", a.Status(), h.Journal().Stats())
		}
	}()
	var alarm *pb.MachineAlarm
	testkit.Eventually(t, 30*time.Second, "machine.alarm at the hub", func() bool {
		alarm = findAlarm(t, h, true)
		return alarm != nil
	})
	// node-opcua fills SourceName with the browse name text "1:Press3".
	if !strings.HasSuffix(alarm.GetMachine(), "Press3") || alarm.GetCondition() != "OilPressureLow" || alarm.GetWorkCenter() != "L1" ||
		alarm.GetAlarmId() == "" || alarm.GetSeverity() == 0 || alarm.GetAcknowledged() {
		t.Fatalf("alarm at the hub = %v", alarm)
	}
	srv.Do(t, "alarm off")
	testkit.Eventually(t, 30*time.Second, "cleared alarm at the hub", func() bool { return findAlarm(t, h, false) != nil })
}

// findAlarm returns a journaled machine.alarm of Press3 with the given
// active state.
func findAlarm(t *testing.T, h *hub.Hub, active bool) *pb.MachineAlarm {
	t.Helper()
	var after uint64
	for {
		recs, err := h.Journal().Read(after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return nil
		}
		for _, r := range recs {
			after = r.Position
			var ev pb.Event
			if err := proto.Unmarshal(r.Event, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.GetType() == "machine.alarm" && strings.HasSuffix(ev.GetMachineAlarm().GetMachine(), "Press3") && ev.GetMachineAlarm().GetActive() == active {
				return ev.GetMachineAlarm()
			}
		}
	}
}

func stop(t *testing.T, c interface{ Shutdown(context.Context) error }) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}
