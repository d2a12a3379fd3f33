package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
)

// ErrNoConfigFile is returned by Reload when the program was not told
// which file it runs from (SetFile).
var ErrNoConfigFile = errors.New("no config file to reload from; restart to apply changes")

// ConfigReloader is the SIGHUP reload logic agent and hub share: re-read
// and validate the file, apply the live fields (today log.level), and list
// every other changed field as waiting for a restart. The config the
// program started with is never modified, so its readers need no lock.
type ConfigReloader[C any] struct {
	program string // e.g. plantsync-agent, for the restart hint
	started C
	log     *slog.Logger
	load    func(path string) (C, error)
	level   func(C) string
	live    map[string]bool

	mu      sync.Mutex
	file    string
	current string   // log.level in effect, "" until the first reload
	pending []string // changed fields waiting for a restart
}

// NewConfigReloader builds the reloader for a program that started with
// cfg. load is the program's LoadConfig; level reads log.level from a
// config.
func NewConfigReloader[C any](program string, cfg C, log *slog.Logger, load func(string) (C, error), level func(C) string) *ConfigReloader[C] {
	return &ConfigReloader[C]{program: program, started: cfg, log: log, load: load, level: level,
		live: map[string]bool{"log.level": true}}
}

// SetFile names the file Reload re-reads.
func (r *ConfigReloader[C]) SetFile(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.file = path
}

// Reload re-reads the file. A file that does not load leaves the program as
// it was and returns the same errors `validate` prints.
func (r *ConfigReloader[C]) Reload(_ context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.file == "" {
		return ErrNoConfigFile
	}
	cfg, err := r.load(r.file)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	var applied, restart []string
	level := r.current
	if level == "" {
		level = r.level(r.started)
	}
	if want := r.level(cfg); want != level {
		if err := SetLogLevel(r.log, want); err != nil {
			// A logger the CLI did not make (embedding, tests) cannot
			// change level; say so instead of pretending.
			restart = append(restart, "log.level")
		} else {
			r.current = want
			applied = append(applied, "log.level")
		}
	}
	for _, f := range ChangedFields(r.started, cfg) {
		if !r.live[f] {
			restart = append(restart, f)
		}
	}
	slices.Sort(restart)
	r.pending = slices.Compact(restart)
	r.log.Info("config reloaded", "file", r.file, "applied", applied)
	if len(r.pending) > 0 {
		r.log.Warn("config changes wait for a restart (systemctl restart "+r.program+")", "fields", r.pending)
	}
	return nil
}

// Pending lists the fields the last Reload found changed but cannot apply
// live; empty when the running program matches its file.
func (r *ConfigReloader[C]) Pending() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.pending)
}
