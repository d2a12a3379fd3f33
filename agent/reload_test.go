package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/internal/cli"
	"github.com/plantsync/plantsync/internal/testkit"
)

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

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
	var out lockedBuffer
	log := cli.Logger(&out, cfg.Log.Level, "text")
	a, err := agent.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Reload(ctx); !errors.Is(err, agent.ErrNoConfigFile) {
		t.Fatalf("reload without a file: %v, want ErrNoConfigFile", err)
	}
	if err := a.Alive(ctx); err == nil {
		t.Fatal("Alive before Start must fail")
	}
	a.SetConfigFile(path)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := a.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	}()
	if err := a.Alive(ctx); err != nil {
		t.Fatalf("Alive: %v", err)
	}
	if log.Enabled(ctx, slog.LevelDebug) {
		t.Fatal("debug enabled at level info")
	}

	write("debug", "drop_oldest")
	if err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if !log.Enabled(ctx, slog.LevelDebug) {
		t.Fatal("log.level debug not applied live")
	}
	if got, want := a.RestartPending(), []string{"buffer.overflow"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("RestartPending = %v, want %v", got, want)
	}
	if !strings.Contains(out.String(), "buffer.overflow") {
		t.Fatalf("the restart-needing field is not in the log:\n%s", out.String())
	}

	// A broken file changes nothing.
	write("loud", "block")
	if err := a.Reload(ctx); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Fatalf("reload of a bad file: %v, want the log.level problem", err)
	}
	if !log.Enabled(ctx, slog.LevelDebug) || len(a.RestartPending()) != 1 {
		t.Fatal("a failed reload changed the running agent")
	}

	// Back to what it started with: nothing pending, level restored.
	write("info", "block")
	if err := a.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if log.Enabled(ctx, slog.LevelDebug) || len(a.RestartPending()) != 0 {
		t.Fatalf("after reverting: debug=%v pending=%v", log.Enabled(ctx, slog.LevelDebug), a.RestartPending())
	}
}
