package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/plantsync/plantsync/hub/auth"
	"github.com/plantsync/plantsync/hub/capture"
	"github.com/plantsync/plantsync/hub/ingest"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/partner"
	"github.com/plantsync/plantsync/hub/pipeline"
	"github.com/plantsync/plantsync/internal/cli"
	"github.com/plantsync/plantsync/plugins/sdk"
)

// Hub is one running plantsync-hub.
type Hub struct {
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry

	ops      *http.Server // optional /healthz + /metrics listener
	opsLis   net.Listener
	journal  *journal.Bolt
	pipeline *pipeline.Pipeline
	guard    *auth.Guard
	ingest   *ingest.Server
	http     *http.Server
	lis      net.Listener
	partners *partner.Handler // POST /api/v1/ingest/{partner}

	// connectors are the plugin destinations' processes and engines.
	connectors *connectors
	// capture polls the connectors that offer changes (hub/capture).
	capture []*capture.Poller
	cursors *capture.Cursors

	stopOnce sync.Once
	stopErr  error

	reload *cli.ConfigReloader[Config] // SIGHUP reloads: see reload.go
}

// New assembles a hub from a validated config.
func New(cfg Config, logger *slog.Logger) *Hub {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Hub{cfg: cfg, log: logger, reg: reg,
		reload: cli.NewConfigReloader("plantsync-hub", cfg, logger, LoadConfig, func(c Config) string { return c.Log.Level })}
}

// Start opens the stores, then the HTTP API, then agent ingest.
func (h *Hub) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = h.Shutdown(sctx)
		}
	}()
	j, err := journal.OpenBolt(journal.BoltOptions{
		Path:           h.cfg.JournalPath(),
		Retention:      h.cfg.Storage.Retention,
		CommitInterval: h.cfg.Storage.CommitInterval,
		Logger:         h.log.With("component", "journal"),
	})
	if err != nil {
		return err
	}
	h.journal = j
	h.registerJournalMetrics()

	if h.guard, err = auth.NewGuard(h.cfg.HTTP.Auth.TokensFile, h.log.With("component", "auth")); err != nil {
		return fmt.Errorf("http.auth.tokens_file: %w", err)
	}
	// The connectors answer which actions they perform before the
	// pipeline compiles the workflows against them.
	pm, err := sdk.NewPrometheusMetrics(h.reg, "plantsync_hub")
	if err != nil {
		return err
	}
	var actions map[string][]string
	if h.connectors, actions, err = openConnectors(ctx, &h.cfg, h.log, pm); err != nil {
		return err
	}
	if h.pipeline, err = pipeline.New(pipeline.Options{
		Config: h.cfg.Pipeline, Dir: h.cfg.Storage.Dir, Journal: j, Destinations: h.cfg.pipelineDestinations(actions),
		Logger: h.log.With("component", "pipeline"), Registerer: h.reg,
		Retention: pipeline.Retention{Delivered: h.cfg.Storage.OutboxRetention, Resolved: h.cfg.Storage.ResolvedRetention,
			Interval: h.cfg.Storage.Retention.Interval},
	}); err != nil {
		return err
	}
	if err := h.connectors.startDelivery(ctx, &h.cfg, h.pipeline.Outbox(), h.pipeline.Exceptions(), h.reg); err != nil {
		return err
	}
	if err := h.pipeline.Start(ctx); err != nil {
		return err
	}
	if err := h.startCapture(ctx); err != nil {
		return err
	}

	// Partners post events on the HTTP listener, straight into the journal.
	if h.partners, err = partner.New(partner.Options{Partners: h.cfg.Partners, Journal: j, Schemas: h.pipeline.Schemas(),
		Logger: h.log.With("component", "partner"), Registerer: h.reg}); err != nil {
		return fmt.Errorf("partners: %w", err)
	}
	var httpTLS *tls.Config
	if ca := h.cfg.HTTP.TLS.ClientCA; ca != "" {
		if httpTLS, err = partner.ServerTLS(ca); err != nil {
			return fmt.Errorf("http.tls.client_ca: %w", err)
		}
	}
	lis, err := net.Listen("tcp", h.cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen %s: %w", h.cfg.HTTP.Listen, err)
	}
	h.lis = lis
	h.http = &http.Server{Handler: h.routes(), ReadHeaderTimeout: 5 * time.Second, TLSConfig: httpTLS}
	go func() {
		var err error
		if h.cfg.HTTP.TLS.Cert != "" {
			err = h.http.ServeTLS(lis, h.cfg.HTTP.TLS.Cert, h.cfg.HTTP.TLS.Key)
		} else {
			err = h.http.Serve(lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("http listener failed", "error", err)
		}
	}()
	h.log.Info("http listening", "addr", lis.Addr().String())
	if h.cfg.HTTP.OpsListen != "" {
		olis, err := net.Listen("tcp", h.cfg.HTTP.OpsListen)
		if err != nil {
			return fmt.Errorf("http.ops_listen %s: %w", h.cfg.HTTP.OpsListen, err)
		}
		h.opsLis = olis
		h.ops = &http.Server{Handler: h.opsRoutes(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := h.ops.Serve(olis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Error("ops listener failed", "error", err)
			}
		}()
		h.log.Info("ops listening (/healthz, /metrics)", "addr", olis.Addr().String())
	}

	h.ingest = ingest.New(h.cfg.GRPC, j, h.log.With("component", "ingest"), h.reg)
	if err := h.ingest.Start(ctx); err != nil {
		return err
	}
	h.log.Info("hub started", "grpc", h.ingest.Addr(), "http", h.URL())
	return nil
}

// URL is the base URL of the HTTP API.
func (h *Hub) URL() string {
	if h.lis == nil {
		return ""
	}
	scheme := "http"
	if h.cfg.HTTP.TLS.Cert != "" {
		scheme = "https"
	}
	return scheme + "://" + h.lis.Addr().String()
}

// OpsURL is the base URL of the ops listener ("" when not configured).
func (h *Hub) OpsURL() string {
	if h.opsLis == nil {
		return ""
	}
	return "http://" + h.opsLis.Addr().String()
}

// GRPCAddr is the bound agent ingest address.
func (h *Hub) GRPCAddr() string {
	if h.ingest == nil {
		return ""
	}
	return h.ingest.Addr()
}

// Journal exposes the journal to tests.
func (h *Hub) Journal() journal.Journal { return h.journal }

// Pipeline exposes the pipeline (outbox, exceptions, approvals, alerts,
// crosswalks) to the delivery engine and tests.
func (h *Hub) Pipeline() *pipeline.Pipeline { return h.pipeline }

// Shutdown stops ingest, finishes journal writes, stops the API,
// delivery and the pipeline, closes the stores and ends the plugins. Idempotent, safe without Start.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.stopOnce.Do(func() {
		var errs []error
		if h.ingest != nil {
			errs = append(errs, h.ingest.Shutdown(ctx))
		}
		if h.http != nil {
			errs = append(errs, h.http.Shutdown(ctx))
		}
		if h.ops != nil {
			errs = append(errs, h.ops.Shutdown(ctx))
		}
		// Change capture writes to the journal like ingest does.
		for _, p := range h.capture {
			errs = append(errs, p.Shutdown(ctx))
		}
		errs = append(errs, h.cursors.Close())
		// Delivery reads the outbox: stop it before the pipeline closes
		// its stores. The pipeline reads the journal: stop it (and close
		// its stores) before the journal.
		errs = append(errs, h.connectors.stopDelivery(ctx))
		if h.pipeline != nil {
			errs = append(errs, h.pipeline.Shutdown(ctx))
		}
		h.connectors.close()
		if h.journal != nil {
			errs = append(errs, h.journal.Close())
		}
		h.stopErr = errors.Join(errs...)
		h.log.Info("hub stopped")
	})
	return h.stopErr
}

// startCapture starts change capture for every plugin destination whose
// connector offers the changes capability, unless its config disables it.
func (h *Hub) startCapture(ctx context.Context) error {
	var m *capture.Metrics
	for _, d := range h.cfg.Destinations {
		host, ok := h.connectors.hosts[d.Name]
		if !ok || d.Changes.Disabled || !host.Info().Has(sdk.CapabilityChanges) {
			continue
		}
		if h.cursors == nil {
			var err error
			if h.cursors, err = capture.OpenCursors(filepath.Join(h.cfg.Storage.Dir, "capture.db")); err != nil {
				return err
			}
			if m, err = capture.NewMetrics(h.reg); err != nil {
				return err
			}
		}
		p, err := capture.New(capture.Options{Destination: d.Name, Config: d.Changes, Source: host, Journal: h.journal, Cursors: h.cursors,
			Metrics: m, Logger: h.log.With("component", "capture", "destination", d.Name)})
		if err != nil {
			return err
		}
		if err := p.Start(ctx); err != nil {
			return err
		}
		h.capture = append(h.capture, p)
	}
	return nil
}

// CaptureStatus reports every change capture poller's state.
func (h *Hub) CaptureStatus() []capture.Status {
	out := make([]capture.Status, 0, len(h.capture))
	for _, p := range h.capture {
		out = append(out, p.Status())
	}
	return out
}

func (h *Hub) registerJournalMetrics() {
	j := h.journal
	g := func(name, help string, f func(journal.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(j.Stats()) })
	}
	c := func(name, help string, f func(journal.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return f(j.Stats()) })
	}
	h.reg.MustRegister(
		g("plantsync_hub_journal_last_position", "Highest journal position.", func(s journal.Stats) float64 { return float64(s.LastPosition) }),
		g("plantsync_hub_journal_records", "Records retained in the journal.", func(s journal.Stats) float64 { return float64(s.Records) }),
		g("plantsync_hub_journal_bytes", "Bytes retained in the journal.", func(s journal.Stats) float64 { return float64(s.Bytes) }),
		c("plantsync_hub_journal_duplicates_total", "Events dropped as duplicates since start.", func(s journal.Stats) float64 { return float64(s.DuplicateTotal) }),
		c("plantsync_hub_journal_rejected_total", "Events kept as rejected since start.", func(s journal.Stats) float64 { return float64(s.RejectedTotal) }),
		c("plantsync_hub_journal_pruned_total", "Records pruned by retention since start.", func(s journal.Stats) float64 { return float64(s.PrunedTotal) }),
	)
}
