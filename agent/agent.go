package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/agent/uplink"
	"github.com/plantsync/plantsync/internal/cli"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Agent is one running plantsync-agent.
type Agent struct {
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry

	buf     *buffer.Buffer
	up      *uplink.Uplink
	sources []namedSource
	admin   *http.Server
	lis     net.Listener

	stopOnce sync.Once
	stopErr  error

	reload *cli.ConfigReloader[Config] // SIGHUP reloads: see reload.go
}

type namedSource struct {
	name, typ string
	src       source.Source
}

// New assembles an agent from a validated config.
func New(cfg Config, logger *slog.Logger) (*Agent, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Agent{cfg: cfg, log: logger, reg: reg,
		reload: cli.NewConfigReloader("plantsync-agent", cfg, logger, LoadConfig, func(c Config) string { return c.Log.Level })}, nil
}

// Start opens the buffer, starts the uplink, the sources and the admin
// listener, in that order (reverse of the drain order).
func (a *Agent) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = a.Shutdown(sctx)
		}
	}()
	if err := os.MkdirAll(a.cfg.Agent.StateDir, 0o700); err != nil {
		return fmt.Errorf("agent.state_dir: %w", err)
	}
	commitSeconds := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "plantsync_agent_buffer_commit_seconds", Help: "Duration of one group commit (fsync included).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	committed := prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_buffer_committed_events_total", Help: "Events committed to the buffer."})
	a.reg.MustRegister(commitSeconds, committed)
	buf, err := buffer.Open(a.cfg.BufferPath(), a.cfg.Buffer, buffer.Options{
		Logger: a.log.With("component", "buffer"),
		ObserveCommit: func(d time.Duration, n int) {
			commitSeconds.Observe(d.Seconds())
			committed.Add(float64(n))
		},
		Decorate: func(ev *pb.Event) { ev.Plant = a.cfg.Agent.Plant },
	})
	if err != nil {
		return err
	}
	a.buf = buf
	a.registerBufferMetrics()

	a.up = uplink.New(a.cfg.Uplink, buf, uplink.Identity{AgentID: a.cfg.Agent.ID, Plant: a.cfg.Agent.Plant},
		a.log.With("component", "uplink"), a.reg)
	if err := a.up.Start(ctx); err != nil {
		return err
	}

	factories, err := Components()
	if err != nil {
		return err
	}
	for _, e := range a.cfg.Sources {
		f := factories[e.Type]
		env := source.Env{
			Name: e.Name, AgentID: a.cfg.Agent.ID, Plant: a.cfg.Agent.Plant,
			StateDir:   filepath.Join(a.cfg.Agent.StateDir, "sources", e.Name),
			Sink:       buf,
			Logger:     a.log.With("component", "source", "source", e.Name, "type", e.Type),
			Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"source": e.Name}, a.reg),
		}
		src, err := f.New(e.Config, env)
		if err != nil {
			return fmt.Errorf("source %q: %w", e.Name, err)
		}
		if err := src.Start(ctx); err != nil {
			return fmt.Errorf("source %q: %w", e.Name, err)
		}
		a.sources = append(a.sources, namedSource{name: e.Name, typ: e.Type, src: src})
	}

	lis, err := net.Listen("tcp", a.cfg.Metrics.Listen)
	if err != nil {
		return fmt.Errorf("metrics.listen %s: %w", a.cfg.Metrics.Listen, err)
	}
	a.lis = lis
	a.admin = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := a.admin.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin listener failed", "error", err)
		}
	}()
	a.log.Info("agent started", "agent", a.cfg.Agent.ID, "plant", a.cfg.Agent.Plant, "epoch", buf.Epoch(),
		"admin", "http://"+lis.Addr().String(), "hub", a.cfg.Uplink.Hub, "sources", len(a.sources))
	return nil
}

// AdminAddr is the bound admin address.
func (a *Agent) AdminAddr() string {
	if a.lis == nil {
		return ""
	}
	return a.lis.Addr().String()
}

// Buffer exposes the buffer to tests and the admin API.
func (a *Agent) Buffer() *buffer.Buffer { return a.buf }

// Shutdown drains in order: sources, buffer commits, uplink, buffer file.
// It is idempotent and safe without Start.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.stopOnce.Do(func() {
		var errs []error
		for i := len(a.sources) - 1; i >= 0; i-- {
			if err := a.sources[i].src.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("source %q: %w", a.sources[i].name, err))
			}
		}
		if a.up != nil {
			errs = append(errs, a.up.Shutdown(ctx))
		}
		if a.buf != nil {
			errs = append(errs, a.buf.Close())
		}
		if a.admin != nil {
			errs = append(errs, a.admin.Shutdown(ctx))
		}
		a.stopErr = errors.Join(errs...)
		a.log.Info("agent stopped")
	})
	return a.stopErr
}

func (a *Agent) registerBufferMetrics() {
	b := a.buf
	gauge := func(name, help string, f func(buffer.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(b.Stats()) })
	}
	a.reg.MustRegister(
		gauge("plantsync_agent_buffer_events", "Events buffered, not yet acknowledged by the hub.", func(s buffer.Stats) float64 { return float64(s.Events) }),
		gauge("plantsync_agent_buffer_bytes", "Bytes of buffered events.", func(s buffer.Stats) float64 { return float64(s.Bytes) }),
		gauge("plantsync_agent_buffer_max_bytes", "Configured buffer bound.", func(buffer.Stats) float64 { return float64(a.cfg.Buffer.MaxBytes) }),
		gauge("plantsync_agent_buffer_blocked", "1 while appends wait for space (policy block).", func(s buffer.Stats) float64 { return boolf(s.Blocked) }),
		gauge("plantsync_agent_buffer_degraded", "1 while commits fail (e.g. disk full).", func(s buffer.Stats) float64 { return boolf(s.Degraded != "") }),
		gauge("plantsync_agent_buffer_last_sequence", "Highest committed sequence in this epoch.", func(s buffer.Stats) float64 { return float64(s.LastSeq) }),
		gauge("plantsync_agent_buffer_acked_sequence", "Highest sequence the hub acknowledged.", func(s buffer.Stats) float64 { return float64(s.AckedThrough) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "plantsync_agent_buffer_dropped_events_total", Help: "Events dropped under drop_oldest (reported to the hub)."},
			func() float64 { return float64(b.Stats().DroppedTotal) }),
	)
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
