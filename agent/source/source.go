// Package source defines what an agent source is: a component that hears a
// plant system (OPC UA server, MQTT broker, site plugin), maps what it hears
// to canonical events and hands them to the buffer, acknowledging its own
// peer only after the buffer reports them committed (DESIGN.md rule 1).
//
// Data path: source ─▶ mapping ─▶ buffer.
package source

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantsync/plantsync/agent/buffer"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Common holds the keys every source entry has.
type Common struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
}

// Sink is where a source hands events: the agent's buffer. done reports the
// commit; only then may the source acknowledge its peer.
type Sink interface {
	AppendAsync(ctx context.Context, events []*pb.Event, done buffer.Done) error
	// AppendWithState also commits the source's own state in the same
	// transaction (see buffer.StateWrite).
	AppendWithState(ctx context.Context, events []*pb.Event, state []buffer.StateWrite, done buffer.Done) error
	// ReadState loads what AppendWithState committed, e.g. at Start.
	ReadState(source string, fn func(key, value []byte) error) error
	// Stats tells, among other things, whether appends are held (Blocked).
	Stats() buffer.Stats
}

// Env is what the agent gives each source.
type Env struct {
	Name     string
	AgentID  string
	Plant    string
	StateDir string // a folder of the source's own under the agent's state_dir
	Sink     Sink
	Logger   *slog.Logger
	// Registerer is already labelled with source=<name>.
	Registerer prometheus.Registerer
}

// State is a source's health.
type State string

// States of Health.
const (
	StateStarting State = "starting"
	StateRunning  State = "running"
	StateDegraded State = "degraded"
	StateStopped  State = "stopped"
)

// Health is shown on /healthz and /api/v1/status.
type Health struct {
	State     State  `json:"state"`
	Connected bool   `json:"connected"`
	LastError string `json:"last_error,omitempty"`
}

// Source is one configured source.
type Source interface {
	// Start returns quickly; the goroutines it starts own their cancel.
	Start(ctx context.Context) error
	// Shutdown is idempotent, safe without Start and honours ctx's deadline.
	Shutdown(ctx context.Context) error
	Health() Health
}

// AdminHandler is implemented by sources that offer operations on the
// agent's loopback admin API (e.g. listing and replaying quarantined
// messages). The agent mounts the handler at /api/v1/sources/<name>/ with
// that prefix stripped; the agent's CLI subcommands call it while the agent
// runs, because the agent holds the lock on its state files.
type AdminHandler interface {
	Admin() http.Handler
}

// Config is a source's typed configuration.
type Config interface {
	// Validate is pure (no network); prefix is the field path, e.g.
	// "sources[2]".
	Validate(prefix string) []error
}

// Factory makes one type of source.
type Factory struct {
	Type string
	// NewDefaultConfig returns the config with defaults, to decode into.
	NewDefaultConfig func() Config
	New              func(cfg Config, env Env) (Source, error)
}
