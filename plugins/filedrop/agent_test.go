package main

import (
	"context"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	agentplugin "github.com/plantsync/plantsync/agent/source/plugin"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// The whole site-plugin path: the filedrop plugin as its own process,
// started by the agent's plugin source, events committed to a real buffer
// and only then acknowledged. A file with a malformed row ends in failed/
// with the line named, and its good rows are in the buffer exactly once.
func TestAgentReadsFiledropProcess(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "filedrop")
	dir, state := t.TempDir(), t.TempDir()
	bcfg := buffer.NewDefaultConfig()
	buf, err := buffer.Open(filepath.Join(state, "buffer.db"), bcfg, buffer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = buf.Close() }()

	cfg := agentplugin.NewDefaultConfig()
	cfg.Common = source.Common{Name: "legacy", Type: "plugin"}
	cfg.Path, cfg.SHA256, cfg.Config = path, sum, shortageConfig(dir)
	cfg.RestartBackoff = 50 * time.Millisecond
	if errs := cfg.Validate("sources[0]"); len(errs) > 0 {
		t.Fatal(errs)
	}
	reg := prometheus.NewRegistry()
	src, err := agentplugin.New(cfg, source.Env{Name: "legacy", AgentID: "a1", Plant: "DE-01", StateDir: state, Sink: buf,
		Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"source": "legacy"}, reg)})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := src.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()

	write(t, dir, "shortage_9.csv", mixedCSV)
	reason := waitFile(t, filepath.Join(dir, "failed", "shortage_9.csv.reason"))
	if !strings.Contains(reason, "line 3: column qty") || !strings.Contains(reason, "line 5:") || !strings.Contains(reason, "line 6:") {
		t.Errorf("reason file:\n%s", reason)
	}
	// The file moved only after the commit, so everything is in the buffer.
	b, err := buf.ReadAfter(0, 100, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	var errLocs []string
	for _, raw := range b.Events {
		var ev pb.Event
		if err := proto.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetPlant() != "DE-01" || ev.GetSource().GetName() != "legacy" || ev.GetSource().GetKind() != "plugin" || ev.GetObservedAt() == nil {
			t.Errorf("envelope = %v", &ev)
		}
		switch ev.GetType() {
		case "material.shortage":
			rowID := ev.GetAttributes()["row_id"]
			count[rowID]++
			if want := agentplugin.EventID("DE-01", "legacy", "material.shortage|"+rowID); ev.GetId() != want {
				t.Errorf("row %s: id %s, want %s", rowID, ev.GetId(), want)
			}
		case "source.error":
			errLocs = append(errLocs, ev.GetSourceError().GetLocation())
		default:
			t.Errorf("unexpected event %v", &ev)
		}
	}
	if len(count) != 3 || count["S-10"] != 1 || count["S-12"] != 1 || count["S-15"] != 1 {
		t.Errorf("good rows in the buffer: %v, want S-10, S-12, S-15 once each", count)
	}
	sort.Strings(errLocs)
	if strings.Join(errLocs, "|") != "shortage_9.csv line 3|shortage_9.csv line 5|shortage_9.csv line 6" {
		t.Errorf("source.error locations = %v", errLocs)
	}
	if h := src.Health(); h.State != source.StateRunning {
		t.Errorf("health = %+v", h)
	}
}
