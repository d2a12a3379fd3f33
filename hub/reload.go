package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/plantsync/plantsync/internal/cli"
)

// ErrNoConfigFile is returned by Reload when the hub was not told which
// file it runs from (SetConfigFile).
var ErrNoConfigFile = errors.New("no config file to reload from; restart to apply changes")

// liveFields are the config fields a reload applies to the running hub.
// Every other field takes effect at the next start; docs/operations.md has
// the table and says why each needs a restart.
var liveFields = map[string]bool{
	"log.level": true,
}

// reloadState is what SIGHUP reloads keep between calls. The config the
// hub started with (h.cfg) is never modified, so readers need no lock.
type reloadState struct {
	mu      sync.Mutex
	file    string
	level   string   // log.level in effect, "" until the first reload
	pending []string // changed fields waiting for a restart
}

// SetConfigFile names the file Reload re-reads: the one the hub was
// loaded from (`plantsync-hub run -config FILE`).
func (h *Hub) SetConfigFile(path string) {
	h.reload.mu.Lock()
	defer h.reload.mu.Unlock()
	h.reload.file = path
}

// Reload re-reads and validates the config file (SIGHUP). A file that does
// not load leaves the running hub exactly as it was and returns the same
// errors `plantsync-hub validate` prints. Otherwise the live fields are
// applied at once, and fields that need a restart are logged as a warning
// and listed by RestartPending until the hub restarts or the file is
// changed back.
func (h *Hub) Reload(ctx context.Context) error {
	h.reload.mu.Lock()
	defer h.reload.mu.Unlock()
	if h.reload.file == "" {
		return ErrNoConfigFile
	}
	cfg, err := LoadConfig(h.reload.file)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}

	var applied, restart []string
	level := h.reload.level
	if level == "" {
		level = h.cfg.Log.Level
	}
	if cfg.Log.Level != level {
		if err := cli.SetLogLevel(h.log, cfg.Log.Level); err != nil {
			// A logger the CLI did not make (embedding, tests) cannot
			// change level; say so instead of pretending.
			restart = append(restart, "log.level")
		} else {
			h.reload.level = cfg.Log.Level
			applied = append(applied, "log.level")
		}
	}
	for _, f := range cli.ChangedFields(h.cfg, cfg) {
		if !liveFields[f] {
			restart = append(restart, f)
		}
	}
	slices.Sort(restart)
	h.reload.pending = slices.Compact(restart)

	h.log.Info("config reloaded", "file", h.reload.file, "applied", applied)
	if len(h.reload.pending) > 0 {
		h.log.Warn("config changes wait for a restart (systemctl restart plantsync-hub)", "fields", h.reload.pending)
	}
	return nil
}

// RestartPending lists the config fields that the last Reload found changed
// but cannot apply live; empty when the running hub matches its file.
func (h *Hub) RestartPending() []string {
	h.reload.mu.Lock()
	defer h.reload.mu.Unlock()
	return slices.Clone(h.reload.pending)
}

// Alive answers the service watchdog: it reads the journal's statistics and
// the ingest server's connection table, which each guard with their own
// locks, so a deadlocked journal or ingest keeps it from answering. It does
// not judge health (failing commits are reported on /healthz): a restart
// would not cure them.
func (h *Hub) Alive(ctx context.Context) error {
	if h.journal == nil || h.ingest == nil {
		return errors.New("hub not started")
	}
	_ = h.journal.Stats()
	_ = h.ingest.Live()
	return ctx.Err()
}
