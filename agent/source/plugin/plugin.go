// Package plugin is the agent source of `type: plugin`: it runs a site
// plugin binary (for example plugins/filedrop) through the plugin SDK, turns
// its records into canonical events, hands them to the buffer and
// acknowledges them to the plugin only after the buffer committed them, so
// a site can add a source without rebuilding the agent.
//
// Data path: site plugin process ─▶ plugins/sdk host ─▶ (this) ─▶ buffer.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/plugins/sdk"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Config of a source of `type: plugin`.
type Config struct {
	source.Common `yaml:",inline"`
	// Path of the plugin binary.
	Path string `yaml:"path"`
	// SHA256 pins the binary; a mismatch refuses to start it.
	SHA256 string `yaml:"sha256"`
	// Config is the plugin's own section (its README lists the keys).
	// Secrets under secret-named keys are file:PATH or env:NAME.
	Config map[string]any `yaml:"config"`
	// RestartBackoff is the first wait before restarting a plugin that
	// keeps dying; it doubles up to a minute.
	RestartBackoff time.Duration `yaml:"restart_backoff"`
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() *Config {
	return &Config{RestartBackoff: time.Second}
}

// Validate implements source.Config. It reads the binary to check its
// checksum, so `plantsync-agent validate` reports a replaced binary before
// the agent starts.
func (c *Config) Validate(prefix string) []error {
	var errs []error
	switch {
	case c.Path == "":
		errs = append(errs, fmt.Errorf("%s.path: required, the plugin binary, e.g. /usr/lib/plantsync-agent/plugins/filedrop", prefix))
	case !filepath.IsAbs(c.Path):
		errs = append(errs, fmt.Errorf("%s.path: %q is not absolute", prefix, c.Path))
	}
	if _, err := sdk.ParseSHA256(c.SHA256); err != nil {
		errs = append(errs, fmt.Errorf("%s.sha256: %q is not 64 hex digits; write the output of `sha256sum %s` here", prefix, c.SHA256, c.Path))
	} else if filepath.IsAbs(c.Path) {
		if err := sdk.VerifyChecksum(c.Path, c.SHA256); err != nil {
			errs = append(errs, fmt.Errorf("%s.sha256: %v", prefix, err))
		}
	}
	if c.RestartBackoff < 10*time.Millisecond || c.RestartBackoff > time.Minute {
		errs = append(errs, fmt.Errorf("%s.restart_backoff: %s; want 10ms to 1m, e.g. 1s", prefix, c.RestartBackoff))
	}
	return errs
}

// Factory registers the type with the agent.
var Factory = source.Factory{
	Type:             "plugin",
	NewDefaultConfig: func() source.Config { return NewDefaultConfig() },
	New: func(cfg source.Config, env source.Env) (source.Source, error) {
		return New(cfg.(*Config), env)
	},
}

// idNamespace scopes derived event ids to plugin record ids.
var idNamespace = uuid.MustParse("3c1d8a9e-5b7f-4e21-9f0a-6d2c4b8e1a57")

// EventID derives an event id from the plant, the source name and the
// record's own id, so a record sent again after a crash becomes the same
// event (DESIGN.md rule 2). The formula is fixed.
func EventID(plant, sourceName, recordID string) string {
	return uuid.NewSHA1(idNamespace, []byte(plant+"\x00"+sourceName+"\x00"+recordID)).String()
}

// Source runs one site plugin.
type Source struct {
	cfg *Config
	env source.Env
	log *slog.Logger
	m   *sdk.PrometheusMetrics

	records   prometheus.Counter
	malformed prometheus.Counter

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu     sync.Mutex
	health source.Health
	host   *sdk.SourceHost
}

// New makes the source; Start runs it.
func New(cfg *Config, env source.Env) (*Source, error) {
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{cfg: cfg, env: env, log: log, health: source.Health{State: source.StateStarting},
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_plugin_records_total",
			Help: "Records a site plugin sent, committed to the buffer."}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_plugin_invalid_records_total",
			Help: "Records a site plugin sent without id or type, kept as source.error events."}),
	}
	if env.Registerer != nil {
		m, err := sdk.NewPrometheusMetrics(env.Registerer, "plantsync_agent")
		if err != nil {
			return nil, fmt.Errorf("source %s: metrics: %w", env.Name, err)
		}
		s.m = m
		for _, c := range []prometheus.Collector{s.records, s.malformed} {
			if err := env.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("source %s: metrics: %w", env.Name, err)
			}
		}
	}
	return s, nil
}

// Start implements source.Source: it returns at once; the plugin is started
// (and restarted) in the background.
func (s *Source) Start(ctx context.Context) error {
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(1)
	go s.run(ctx)
	return nil
}

func (s *Source) setHealth(state source.State, connected bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.health.State, s.health.Connected = state, connected
	if err != nil {
		s.health.LastError = err.Error()
	}
}

func (s *Source) run(ctx context.Context) {
	defer s.wg.Done()
	pause := s.cfg.RestartBackoff
	var host *sdk.SourceHost
	for host == nil {
		hc := sdk.HostConfig{Name: s.env.Name, Path: s.cfg.Path, SHA256: s.cfg.SHA256, Config: s.cfg.Config, Logger: s.log,
			RestartBackoff: s.cfg.RestartBackoff, RestartBackoffMax: time.Minute}
		if s.m != nil {
			hc.Metrics = s.m
		}
		h, err := sdk.OpenSource(ctx, hc)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Error("site plugin did not start; trying again", "error", err, "in", pause)
			s.setHealth(source.StateDegraded, false, err)
			if !sleep(ctx, pause) {
				return
			}
			pause = min(2*pause, time.Minute)
			continue
		}
		host = h
	}
	s.mu.Lock()
	s.host = host
	s.mu.Unlock()
	defer func() { _ = host.Close() }()
	pause = s.cfg.RestartBackoff
	for ctx.Err() == nil {
		s.setHealth(source.StateRunning, true, nil)
		err := s.read(ctx, host)
		if ctx.Err() != nil {
			return
		}
		s.log.Error("reading the site plugin failed; reading again", "error", err, "in", pause)
		s.setHealth(source.StateDegraded, false, err)
		if !sleep(ctx, pause) {
			return
		}
		pause = min(2*pause, time.Minute)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// errCommit ends a Read whose records the buffer did not commit, so the
// next Read sends them again.
var errCommit = errors.New("buffer commit failed")

// read runs one Read: records go to the buffer, and the plugin learns the
// highest seq below which everything is committed.
func (s *Source) read(ctx context.Context, host *sdk.SourceHost) error {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	a := newAcker(host)
	defer a.stop()
	var inflight sync.WaitGroup
	defer inflight.Wait()
	err := host.Read(rctx, sdk.ReadRequest{}, func(recs []sdk.Record) error {
		if len(recs) == 0 {
			return nil
		}
		events := make([]*pb.Event, len(recs))
		now := time.Now()
		for i, r := range recs {
			events[i] = s.event(r, now)
		}
		last := recs[len(recs)-1].Seq
		a.add(last)
		inflight.Add(1)
		err := s.env.Sink.AppendAsync(rctx, events, func(_, _ uint64, err error) {
			defer inflight.Done()
			if err != nil {
				cancel(fmt.Errorf("%w: %v", errCommit, err))
				return
			}
			s.records.Add(float64(len(events)))
			a.done(last)
		})
		if err != nil {
			inflight.Done()
			return err
		}
		return nil
	})
	if cause := context.Cause(rctx); cause != nil && ctx.Err() == nil && errors.Is(cause, errCommit) {
		return cause
	}
	return err
}

// event turns a record into the event the buffer keeps.
func (s *Source) event(r sdk.Record, now time.Time) *pb.Event {
	ev := r.Event
	var problem string
	switch {
	case ev == nil:
		problem = "record without an event"
		ev = &pb.Event{}
	case ev.GetType() == "":
		problem = "record without an event type"
	case r.ID == "":
		problem = "record without an id"
	}
	if problem != "" {
		// Never silent: the hub sees what the plugin sent and why it is
		// not an event.
		s.malformed.Inc()
		ev = &pb.Event{Type: "source.error", Payload: &pb.Event_SourceError{SourceError: &pb.SourceError{
			Reason: "site plugin: " + problem, Location: fmt.Sprintf("source %s record %d", s.env.Name, r.Seq)}}}
	}
	id := r.ID
	if id == "" {
		// Without the plugin's own id there is nothing stable to derive from.
		v7, _ := uuid.NewV7()
		id = v7.String()
	}
	ev.Id = EventID(s.env.Plant, s.env.Name, id)
	ev.Plant = s.env.Plant
	ev.Sequence = 0
	uri := ev.GetSource().GetUri()
	if uri == "" {
		uri = "plugin:" + s.env.Name
	}
	ev.Source = &pb.Source{Name: s.env.Name, Kind: "plugin", Uri: uri}
	if ev.ObservedAt == nil {
		ev.ObservedAt = timestamppb.New(now)
	}
	if ev.OccurredAt == nil {
		ev.OccurredAt = ev.ObservedAt
	}
	if ev.SchemaVersion == 0 {
		ev.SchemaVersion = 1
	}
	if ev.CorrelationId == "" {
		ev.CorrelationId = ev.Id
	}
	return ev
}

// Shutdown implements source.Source: it stops reading and ends the plugin
// process.
func (s *Source) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
	})
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.setHealth(source.StateStopped, false, nil)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Health implements source.Source.
func (s *Source) Health() source.Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.health
	if s.host != nil {
		if st := s.host.Status(); st.LastError != "" && h.LastError == "" {
			h.LastError = st.LastError
		}
	}
	return h
}
