package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantsync/plantsync/hub/delivery"
	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/plugins/sdk"
)

// connectors are the plugin processes of the connector destinations and
// the delivery engines that feed them.
type connectors struct {
	log     *slog.Logger
	hosts   map[string]*sdk.DestinationHost
	ledger  *delivery.Ledger
	engines []*delivery.Engine
}

// openConnectors starts the plugin of every plugin destination (checksum
// checked, Configure called) and returns what each answered it performs.
// metrics may be nil.
func openConnectors(ctx context.Context, cfg *Config, log *slog.Logger, metrics sdk.Metrics) (*connectors, map[string][]string, error) {
	c := &connectors{log: log, hosts: map[string]*sdk.DestinationHost{}}
	actions := map[string][]string{}
	for i, d := range cfg.Destinations {
		if d.Type != DestinationPlugin {
			continue
		}
		pl, ok := cfg.plugin(d.Plugin)
		if !ok {
			c.close()
			return nil, nil, fmt.Errorf("destinations[%d].plugin: %q is not declared under plugins", i, d.Plugin)
		}
		var secrets []string
		for j, ref := range d.Secrets {
			v, err := config.Secret(fmt.Sprintf("destinations[%d].secrets[%d]", i, j), ref)
			if err != nil {
				c.close()
				return nil, nil, err
			}
			secrets = append(secrets, v)
		}
		h, err := sdk.OpenDestination(ctx, sdk.HostConfig{Name: d.Name, Path: pl.Path, SHA256: pl.SHA256, Config: d.Config,
			Secrets: secrets, Logger: log.With("component", "plugin", "destination", d.Name), Metrics: metrics, StartTimeout: pl.StartTimeout})
		if err != nil {
			c.close()
			return nil, nil, fmt.Errorf("destinations[%d] (%s): plugin %s (%s): %w", i, d.Name, pl.Name, pl.Path, err)
		}
		c.hosts[d.Name] = h
		info := h.Info()
		actions[d.Name] = slices.Clone(info.Actions)
		log.Info("connector ready", "destination", d.Name, "plugin", pl.Name, "version", info.Version, "actions", info.Actions, "capabilities", info.Capabilities)
	}
	return c, actions, nil
}

// startDelivery opens the delivery ledger and starts one engine per
// plugin destination over the outbox.
func (c *connectors) startDelivery(ctx context.Context, cfg *Config, ob outbox.Store, x *exceptions.Bolt, reg prometheus.Registerer) error {
	if len(c.hosts) == 0 {
		return nil
	}
	var err error
	if c.ledger, err = delivery.OpenLedger(filepath.Join(cfg.Storage.Dir, "delivery.db")); err != nil {
		return err
	}
	m, err := delivery.NewMetrics(reg)
	if err != nil {
		return err
	}
	parked := parkedDeliveries(x)
	for _, d := range cfg.Destinations {
		h, ok := c.hosts[d.Name]
		if !ok {
			continue
		}
		e, err := delivery.New(delivery.Options{Destination: d.Name, Config: d.Delivery, Outbox: ob, Connector: h,
			CanLookup: h.Info().Has(sdk.CapabilityLookup), Ledger: c.ledger, Parked: parked, Metrics: m,
			Logger: c.log.With("component", "delivery", "destination", d.Name)})
		if err != nil {
			return err
		}
		if err := e.Start(ctx); err != nil {
			return err
		}
		c.engines = append(c.engines, e)
	}
	return nil
}

// stopDelivery stops the engines (attempts in flight finish within ctx)
// and closes the ledger; the plugins keep running until close.
func (c *connectors) stopDelivery(ctx context.Context) error {
	if c == nil {
		return nil
	}
	var errs []error
	for _, e := range c.engines {
		errs = append(errs, e.Shutdown(ctx))
	}
	c.engines = nil
	if c.ledger != nil {
		errs = append(errs, c.ledger.Close())
		c.ledger = nil
	}
	return errors.Join(errs...)
}

// close ends the plugin processes.
func (c *connectors) close() {
	if c == nil {
		return
	}
	for _, h := range c.hosts {
		_ = h.Close()
	}
}

// DeliveryStatus reports every delivery engine's state.
func (h *Hub) DeliveryStatus() []delivery.Status {
	if h.connectors == nil {
		return nil
	}
	out := make([]delivery.Status, 0, len(h.connectors.engines))
	for _, e := range h.connectors.engines {
		out = append(out, e.Status())
	}
	return out
}

// parkedDeliveries lists the destination's failed entries whose delivery
// exception is open: they hold back the later entries of their ordering
// key (hub/delivery).
func parkedDeliveries(x *exceptions.Bolt) delivery.ParkedFunc {
	return func(ctx context.Context, dest string) (map[uint64]bool, error) {
		out := map[uint64]bool{}
		f := exceptions.Filter{Kind: exceptions.KindDelivery, State: string(exceptions.StateOpen), Limit: 1000}
		for {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			list, err := x.List(f)
			if err != nil {
				return nil, err
			}
			for _, e := range list {
				if e.Delivery != nil && e.Delivery.Destination == dest {
					out[e.Delivery.Seq] = true
				}
			}
			if len(list) < f.Limit {
				return out, nil
			}
			f.Before = list[len(list)-1].ID
		}
	}
}

// CheckPlugins starts the plugin of every plugin destination, as `run`
// would, and checks the workflows against the actions each connector
// answered it performs; `plantsync-hub validate` calls it after
// LoadConfig. The plugins are stopped again before it returns.
func CheckPlugins(ctx context.Context, cfg Config, log *slog.Logger) []error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, actions, err := openConnectors(ctx, &cfg, log, nil)
	if err != nil {
		return []error{err}
	}
	c.close()
	return cfg.Pipeline.Validate("pipeline", cfg.pipelineDestinations(actions))
}
