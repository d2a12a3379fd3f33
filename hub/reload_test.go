package hub_test

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

	"github.com/plantsync/plantsync/hub"
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
	var out lockedBuffer
	log := cli.Logger(&out, cfg.Log.Level, "text")
	h := hub.New(cfg, log)

	ctx := context.Background()
	if err := h.Reload(ctx); !errors.Is(err, hub.ErrNoConfigFile) {
		t.Fatalf("reload without a file: %v, want ErrNoConfigFile", err)
	}
	if err := h.Alive(ctx); err == nil {
		t.Fatal("Alive before Start must fail")
	}
	h.SetConfigFile(path)
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := h.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	}()
	if err := h.Alive(ctx); err != nil {
		t.Fatalf("Alive: %v", err)
	}
	if log.Enabled(ctx, slog.LevelDebug) {
		t.Fatal("debug enabled at level info")
	}

	write("debug", "48h")
	if err := h.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if !log.Enabled(ctx, slog.LevelDebug) {
		t.Fatal("log.level debug not applied live")
	}
	if got, want := h.RestartPending(), []string{"storage.retention.max_age"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("RestartPending = %v, want %v", got, want)
	}
	if !strings.Contains(out.String(), "storage.retention.max_age") {
		t.Fatalf("the restart-needing field is not in the log:\n%s", out.String())
	}

	// A broken file changes nothing.
	write("loud", "1h")
	if err := h.Reload(ctx); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Fatalf("reload of a bad file: %v, want the log.level problem", err)
	}
	if !log.Enabled(ctx, slog.LevelDebug) || len(h.RestartPending()) != 1 {
		t.Fatal("a failed reload changed the running hub")
	}

	// Back to what it started with: nothing pending, level restored.
	write("info", "720h")
	if err := h.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if log.Enabled(ctx, slog.LevelDebug) || len(h.RestartPending()) != 0 {
		t.Fatalf("after reverting: debug=%v pending=%v", log.Enabled(ctx, slog.LevelDebug), h.RestartPending())
	}
}
