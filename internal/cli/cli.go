// Package cli holds what both binaries' main packages share: logger setup
// and running a component until a signal arrives.
package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Logger builds the process logger from the config's log level and format.
func Logger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Component is what Run drives.
type Component interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// Run starts c and waits for SIGINT or SIGTERM, then shuts it down within
// stopTimeout.
func Run(c Component, log *slog.Logger, stopTimeout time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("signal received; shutting down", "timeout", stopTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := c.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
