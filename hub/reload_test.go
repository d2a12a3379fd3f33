package hub_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/hub"
	"github.com/plantsync/plantsync/internal/cli"
	"github.com/plantsync/plantsync/internal/syncbuf"
	"github.com/plantsync/plantsync/internal/testkit"
)

// TestReloadLiveAndRestartFields shows one field of each kind: log.level
// changes in the running hub, storage.retention.max_age waits for a restart.
func TestReloadLiveAndRestartFields(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := testkit.NewPKI(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "hub.yaml")
	write := func(level, maxAge string) {
		t.Helper()
		cfg := fmt.Sprintf(`grpc:
  listen: 127.0.0.1:0
  tls: {cert: %s, key: %s, client_ca: %s}
http:
  listen: 127.0.0.1:0
storage:
  dir: %s
  retention: {max_age: %s, interval: 1m}
pki:
  dir: %s
log:
  level: %s
`, p.Paths.HubCert, p.Paths.HubKey, p.Paths.CACert, filepath.Join(dir, "state"), maxAge, p.Dir, level)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("info", "720h")
	cfg, err := hub.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var out syncbuf.Buffer
	log := cli.Logger(&out, cfg.Log.Level, "text")
	testkit.CheckReload(t, hub.New(cfg, log), testkit.ReloadCase{Path: path, ErrNoFile: hub.ErrNoConfigFile, RestartField: "storage.retention.max_age", Log: log, Out: &out,
		Write: func(level string, changed bool) {
			if changed {
				write(level, "48h")
			} else {
				write(level, "720h")
			}
		}})
}
