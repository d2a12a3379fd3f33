package testkit

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/plantsync/plantsync/internal/syncbuf"
)

// Reloadable is what the agent and the hub offer for SIGHUP and the
// service watchdog.
type Reloadable interface {
	SetConfigFile(path string)
	Reload(ctx context.Context) error
	RestartPending() []string
	Alive(ctx context.Context) error
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// ReloadCase drives CheckReload. Write rewrites the config file with a
// log level and either the starting value of RestartField or another one.
type ReloadCase struct {
	Path         string
	ErrNoFile    error
	RestartField string
	Write        func(level string, changed bool)
	Log          *slog.Logger
	Out          *syncbuf.Buffer
}

// CheckReload shows one field of each kind on a running service: log.level
// changes live, RestartField waits for a restart and is logged; a file that
// does not load changes nothing; going back to the starting file leaves
// nothing pending. Before Start, Reload without a file and Alive fail.
func CheckReload(t *testing.T, s Reloadable, c ReloadCase) {
	t.Helper()
	ctx := context.Background()
	if err := s.Reload(ctx); !errors.Is(err, c.ErrNoFile) {
		t.Fatalf("reload without a file: %v, want %v", err, c.ErrNoFile)
	}
	if err := s.Alive(ctx); err == nil {
		t.Fatal("Alive before Start must fail")
	}
	s.SetConfigFile(c.Path)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := s.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	}()
	if err := s.Alive(ctx); err != nil {
		t.Fatalf("Alive: %v", err)
	}
	debug := func() bool { return c.Log.Enabled(ctx, slog.LevelDebug) }
	if debug() {
		t.Fatal("debug enabled at level info")
	}

	c.Write("debug", true)
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if !debug() {
		t.Fatal("log.level debug not applied live")
	}
	if got, want := s.RestartPending(), []string{c.RestartField}; !reflect.DeepEqual(got, want) {
		t.Fatalf("RestartPending = %v, want %v", got, want)
	}
	if !strings.Contains(c.Out.String(), c.RestartField) {
		t.Fatalf("the restart-needing field is not in the log:\n%s", c.Out.String())
	}

	// A broken file changes nothing.
	c.Write("loud", false)
	if err := s.Reload(ctx); err == nil || !strings.Contains(err.Error(), "log.level") {
		t.Fatalf("reload of a bad file: %v, want the log.level problem", err)
	}
	if !debug() || len(s.RestartPending()) != 1 {
		t.Fatal("a failed reload changed the running service")
	}

	// Back to what it started with: nothing pending, level restored.
	c.Write("info", false)
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if debug() || len(s.RestartPending()) != 0 {
		t.Fatalf("after reverting: debug=%v pending=%v", debug(), s.RestartPending())
	}
}
