package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/plugins/sdk"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidate(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "filedrop")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	sum, err := sdk.FileSHA256(bin)
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Repeat("0", 64)
	for _, tc := range []struct {
		mod  func(c *Config)
		want string
	}{
		{func(c *Config) {}, ""},
		{func(c *Config) { c.Path = "" }, "sources[0].path: required"},
		{func(c *Config) { c.Path = "plugins/filedrop" }, `sources[0].path: "plugins/filedrop" is not absolute`},
		{func(c *Config) { c.SHA256 = "abc" }, `sources[0].sha256: "abc" is not 64 hex digits`},
		{func(c *Config) { c.SHA256 = wrong }, "sources[0].sha256: plugin checksum mismatch: " + bin + ": expected sha256 " + wrong + ", actual " + sum},
		{func(c *Config) { c.RestartBackoff = 0 }, "sources[0].restart_backoff"},
	} {
		c := NewDefaultConfig()
		c.Common = source.Common{Name: "drop", Type: "plugin"}
		c.Path, c.SHA256 = bin, sum
		tc.mod(c)
		errs := c.Validate("sources[0]")
		switch {
		case tc.want == "" && len(errs) > 0:
			t.Errorf("valid config: %v", errs)
		case tc.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want)):
			t.Errorf("errs = %v, want one containing %q", errs, tc.want)
		}
	}
}

func TestEventEnvelope(t *testing.T) {
	s, err := New(NewDefaultConfig(), source.Env{Name: "drop", Plant: "DE-01"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	ev := s.event(sdk.Record{Seq: 1, ID: "row-1", Event: &pb.Event{Type: "machine.state", Plant: "XX", Sequence: 9,
		Source: &pb.Source{Name: "spoofed", Uri: "file:a.csv#line=2"}}}, now)
	if ev.GetId() != EventID("DE-01", "drop", "row-1") || ev.GetPlant() != "DE-01" || ev.GetSequence() != 0 ||
		ev.GetSource().GetName() != "drop" || ev.GetSource().GetKind() != "plugin" || ev.GetSource().GetUri() != "file:a.csv#line=2" ||
		!ev.GetOccurredAt().AsTime().Equal(now) || ev.GetSchemaVersion() != 1 || ev.GetCorrelationId() != ev.GetId() {
		t.Errorf("event = %v", ev)
	}
	if EventID("DE-01", "drop", "row-1") == EventID("DE-01", "drop", "row-2") || EventID("DE-01", "drop", "row-1") == EventID("DE-02", "drop", "row-1") {
		t.Error("event ids collide")
	}
	for _, rec := range []sdk.Record{{Seq: 2, ID: "x"}, {Seq: 3, ID: "y", Event: &pb.Event{}}, {Seq: 4, Event: &pb.Event{Type: "machine.state"}}} {
		ev := s.event(rec, now)
		if ev.GetType() != "source.error" || !strings.HasPrefix(ev.GetSourceError().GetReason(), "site plugin: record without") || ev.GetId() == "" {
			t.Errorf("record %v became %v", rec, ev)
		}
	}
}

// A source entry as written in the agent config decodes strictly, with the
// plugin's section kept as a map for the plugin to read.
func TestDecodeYAML(t *testing.T) {
	raw := []byte(`name: legacy
type: plugin
path: /usr/lib/plantsync-agent/plugins/filedrop
sha256: 0000000000000000000000000000000000000000000000000000000000000000
restart_backoff: 2s
config:
  dir: /srv/plantsync/drop
  files:
    - pattern: "*.csv"
      id_columns: [a, b]
      batch: 3
`)
	c := NewDefaultConfig()
	if err := config.Decode("sources[0]", raw, c); err != nil {
		t.Fatal(err)
	}
	files, _ := c.Config["files"].([]any)
	if c.Name != "legacy" || c.RestartBackoff != 2*time.Second || c.Config["dir"] != "/srv/plantsync/drop" || len(files) != 1 ||
		files[0].(map[string]any)["batch"] != 3 {
		t.Errorf("decoded %+v", c)
	}
	if err := config.Decode("sources[0]", append(raw, []byte("shasum: x\n")...), NewDefaultConfig()); err == nil || !strings.Contains(err.Error(), "shasum") {
		t.Errorf("unknown key: %v", err)
	}
}
