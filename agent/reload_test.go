package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/internal/cli"
	"github.com/plantsync/plantsync/internal/syncbuf"
	"github.com/plantsync/plantsync/internal/testkit"
)

// TestReloadLiveAndRestartFields shows one field of each kind on a running
// agent: log.level changes live, buffer.overflow waits for a restart.
func TestReloadLiveAndRestartFields(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := testkit.NewPKI(t)
	cert, key := p.Agent(t, "press-1", "DE-01")
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	// Nothing listens on the hub address: the uplink retries meanwhile,
	// which is all this test needs from it.
	hubAddr := testkit.FreePort(t)
	write := func(level, overflow string) {
		t.Helper()
		cfg := fmt.Sprintf(`agent: {id: press-1, plant: DE-01, state_dir: %s}
uplink:
  hub: %s
  tls: {ca: %s, cert: %s, key: %s, server_name: localhost}
buffer: {max_bytes: 1048576, overflow: %s}
sources:
  - {name: load, type: generator, rate: 50}
metrics: {listen: "127.0.0.1:0"}
log: {level: %s}
`, filepath.Join(dir, "state"), hubAddr, p.Paths.CACert, cert, key, overflow, level)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("info", "block")
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var out syncbuf.Buffer
	log := cli.Logger(&out, cfg.Log.Level, "text")
	a, err := agent.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	testkit.CheckReload(t, a, testkit.ReloadCase{Path: path, ErrNoFile: agent.ErrNoConfigFile, RestartField: "buffer.overflow", Log: log, Out: &out,
		Write: func(level string, changed bool) {
			if changed {
				write(level, "drop_oldest")
			} else {
				write(level, "block")
			}
		}})
}
