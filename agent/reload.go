package agent

import (
	"context"
	"errors"

	"github.com/plantsync/plantsync/internal/cli"
)

// ErrNoConfigFile is returned by Reload when the agent was not told which
// file it runs from (SetConfigFile).
var ErrNoConfigFile = cli.ErrNoConfigFile

// SetConfigFile names the file Reload re-reads: the one the agent was
// loaded from (`plantsync-agent run -config FILE`).
func (a *Agent) SetConfigFile(path string) { a.reload.SetFile(path) }

// Reload re-reads and validates the config file (SIGHUP). A file that does
// not load leaves the running agent exactly as it was and returns the same
// errors `plantsync-agent validate` prints. log.level applies at once; every
// other changed field is logged and listed by RestartPending until the
// agent restarts (docs/operations.md has the table and the reasons).
func (a *Agent) Reload(ctx context.Context) error { return a.reload.Reload(ctx) }

// RestartPending lists the config fields that the last Reload found changed
// but cannot apply live; empty when the running agent matches its file.
func (a *Agent) RestartPending() []string { return a.reload.Pending() }

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
