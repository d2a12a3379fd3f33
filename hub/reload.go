package hub

import (
	"context"
	"errors"

	"github.com/plantsync/plantsync/internal/cli"
)

// ErrNoConfigFile is returned by Reload when the hub was not told which
// file it runs from (SetConfigFile).
var ErrNoConfigFile = cli.ErrNoConfigFile

// SetConfigFile names the file Reload re-reads: the one the hub was loaded
// from (`plantsync-hub run -config FILE`).
func (h *Hub) SetConfigFile(path string) { h.reload.SetFile(path) }

// Reload re-reads and validates the config file (SIGHUP). A file that does
// not load leaves the running hub exactly as it was and returns the same
// errors `plantsync-hub validate` prints. log.level applies at once; every
// other changed field is logged and listed by RestartPending until the hub
// restarts (docs/operations.md has the table and the reasons).
func (h *Hub) Reload(ctx context.Context) error { return h.reload.Reload(ctx) }

// RestartPending lists the config fields that the last Reload found changed
// but cannot apply live; empty when the running hub matches its file.
func (h *Hub) RestartPending() []string { return h.reload.Pending() }

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
