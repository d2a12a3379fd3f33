// Command sandboxerp runs the SANDBOX ERP of `make run`: an HTTP target
// speaking the webhook plugin's protocol that keeps what it receives in a
// bbolt file and lists it at GET /documents. It is a stand-in for a real
// ERP, clearly not one. See sim/sandboxerp/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/plantsync/plantsync/internal/buildinfo"
	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/sim/sandboxerp"
)

const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: it returns the exit code and stops when
// ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sandboxerp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: sandboxerp [flags]\n\nA SANDBOX ERP for demos: receives webhook deliveries, keeps them, lists them at /documents.\n\n")
		fs.PrintDefaults()
	}
	var (
		listen   = fs.String("listen", "127.0.0.1:8090", "HTTP `host:port` (port 0 picks a free one)")
		dir      = fs.String("data", ".state/sandboxerp", "`folder` of the document store")
		secret   = fs.String("hmac-secret", "", "signing secret deliveries must carry, as file:PATH or env:NAME (empty: unsigned accepted)")
		logLevel = fs.String("log-level", "info", "log level: debug, info, warn or error")
		version  = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sandboxerp: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.String("sandboxerp"))
		return 0
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "sandboxerp: -log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg := sandboxerp.Config{Listen: *listen, Dir: *dir}
	if *secret != "" {
		v, err := config.Secret("-hmac-secret", *secret)
		if err != nil {
			fmt.Fprintf(stderr, "sandboxerp: %v\n", err)
			return 2
		}
		cfg.HMACSecret = v
	}
	s, err := sandboxerp.New(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "sandboxerp: %v\n", err)
		return 1
	}
	if err := s.Start(ctx); err != nil {
		fmt.Fprintf(stderr, "sandboxerp: %v\n", err)
		_ = s.Shutdown(context.Background())
		return 1
	}
	// Scripts and the demo runner read these lines to find the endpoints.
	fmt.Fprintf(stdout, "webhook: %s/webhook\nlookup: %s/documents/by-key/{key}\ndocuments: %s/documents\n", s.URL(), s.URL(), s.URL())

	<-ctx.Done()
	logger.Info("shutting down", "reason", context.Cause(ctx))
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "sandboxerp: %v\n", err)
		return 1
	}
	return 0
}
