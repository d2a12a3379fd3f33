package plantsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// ErrMQTT marks failures of the in-process MQTT broker.
var ErrMQTT = errors.New("plantsim mqtt broker")

const mqttListenerID = "plantsim"

// startMQTT binds and serves the broker. The inline client lets the
// simulator publish through the broker without a network connection of its
// own; subscribers cannot tell the difference.
func startMQTT(cfg Config, logger *slog.Logger) (*mqtt.Server, string, error) {
	b := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Logger:       slog.New(demoteInfo{logger.With("component", "plantsim.mqtt.mochi").Handler()}),
	})
	// mochi refuses every connection unless an auth hook allows it; a plant
	// simulator has no users.
	if err := b.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, "", fmt.Errorf("%w: add auth hook: %w", ErrMQTT, err)
	}
	l := listeners.NewTCP(listeners.Config{ID: mqttListenerID, Address: cfg.MQTTListen})
	if err := b.AddListener(l); err != nil {
		return nil, "", fmt.Errorf("%w: listen on %s: %w", ErrMQTT, cfg.MQTTListen, err)
	}
	if err := b.Serve(); err != nil {
		_ = b.Close()
		return nil, "", fmt.Errorf("%w: serve: %w", ErrMQTT, err)
	}
	// Address reports the bound address once Init has listened, so port 0
	// reads back as the real port.
	return b, l.Address(), nil
}

// demoteInfo turns mochi's info lines (startup banners, listener attached)
// into debug lines: the simulator logs its own listen addresses once.
type demoteInfo struct{ h slog.Handler }

func (d demoteInfo) Enabled(ctx context.Context, l slog.Level) bool {
	return d.h.Enabled(ctx, demote(l))
}

func (d demoteInfo) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	return d.h.Handle(ctx, r)
}

func (d demoteInfo) WithAttrs(attrs []slog.Attr) slog.Handler {
	return demoteInfo{d.h.WithAttrs(attrs)}
}

func (d demoteInfo) WithGroup(name string) slog.Handler {
	return demoteInfo{d.h.WithGroup(name)}
}

func demote(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}
