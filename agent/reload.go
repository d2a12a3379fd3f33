package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/plantsync/plantsync/internal/cli"
)

// ErrNoConfigFile is returned by Reload when the agent was not told which
// file it runs from (SetConfigFile).
var ErrNoConfigFile = errors.New("no config file to reload from; restart to apply changes")

// liveFields are the config fields a reload applies to the running agent.
// Every other field takes effect at the next start; docs/operations.md has
// the table and says why each needs a restart.
var liveFields = map[string]bool{
	"log.level": true,
}

// reloadState is what SIGHUP reloads keep between calls. The config the
// agent started with (a.cfg) is never modified, so readers need no lock.
type reloadState struct {
	mu      sync.Mutex
	file    string
	level   string   // log.level in effect, "" until the first reload
	pending []string // changed fields waiting for a restart
}

// SetConfigFile names the file Reload re-reads: the one the agent was
// loaded from (`plantsync-agent run -config FILE`).
func (a *Agent) SetConfigFile(path string) {
	a.reload.mu.Lock()
	defer a.reload.mu.Unlock()
	a.reload.file = path
}

// Reload re-reads and validates the config file (SIGHUP). A file that does
// not load leaves the running agent exactly as it was and returns the same
// errors `plantsync-agent validate` prints. Otherwise the live fields are
// applied at once, and fields that need a restart are logged as a warning
// and listed by RestartPending until the agent restarts or the file is
// changed back.
func (a *Agent) Reload(ctx context.Context) error {
	a.reload.mu.Lock()
	defer a.reload.mu.Unlock()
	if a.reload.file == "" {
		return ErrNoConfigFile
	}
	cfg, err := LoadConfig(a.reload.file)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}

	var applied, restart []string
	level := a.reload.level
	if level == "" {
		level = a.cfg.Log.Level
	}
	if cfg.Log.Level != level {
		if err := cli.SetLogLevel(a.log, cfg.Log.Level); err != nil {
			// A logger the CLI did not make (embedding, tests) cannot
			// change level; say so instead of pretending.
			restart = append(restart, "log.level")
		} else {
			a.reload.level = cfg.Log.Level
			applied = append(applied, "log.level")
		}
	}
	for _, f := range cli.ChangedFields(a.cfg, cfg) {
		if !liveFields[f] {
			restart = append(restart, f)
		}
	}
	slices.Sort(restart)
	a.reload.pending = slices.Compact(restart)

	a.log.Info("config reloaded", "file", a.reload.file, "applied", applied)
	if len(a.reload.pending) > 0 {
		a.log.Warn("config changes wait for a restart (systemctl restart plantsync-agent)", "fields", a.reload.pending)
	}
	return nil
}

// RestartPending lists the config fields that the last Reload found changed
// but cannot apply live; empty when the running agent matches its file.
func (a *Agent) RestartPending() []string {
	a.reload.mu.Lock()
	defer a.reload.mu.Unlock()
	return slices.Clone(a.reload.pending)
}

// Alive answers the service watchdog: it reads the state of the buffer, the
// uplink and every source, which each guard with their own locks, so a
// deadlocked component keeps it from answering. It does not judge health:
// a hub that is down or a full buffer are states a restart would not cure,
// and they are reported on /healthz instead.
func (a *Agent) Alive(ctx context.Context) error {
	if a.buf == nil || a.up == nil {
		return errors.New("agent not started")
	}
	_ = a.Status()
	return ctx.Err()
}
