// Package cli holds what both binaries' main packages share: the process
// logger, and the run loop that drives a component as a service: it tells
// the service manager when the component is ready, feeds the watchdog from
// its main loop, reloads the config on SIGHUP and drains on SIGTERM.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/plantsync/plantsync/internal/sdnotify"
)

// Logger builds the process logger from the config's log level and format.
// Its level can be changed while running with SetLogLevel, for it and every
// logger derived from it, which is how a reload applies log.level.
func Logger(w io.Writer, level, format string) *slog.Logger {
	lv := new(slog.LevelVar)
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	lv.Set(l)
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(levelHandler{Handler: h, level: lv})
}

// levelHandler carries the shared level through With and WithGroup, so that
// SetLogLevel can reach it from any derived logger.
type levelHandler struct {
	slog.Handler
	level *slog.LevelVar
}

func (h levelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return levelHandler{Handler: h.Handler.WithAttrs(attrs), level: h.level}
}

func (h levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{Handler: h.Handler.WithGroup(name), level: h.level}
}

// ErrFixedLevel is returned by SetLogLevel for a logger that Logger did not
// make: its level cannot change while running.
var ErrFixedLevel = errors.New("logger level is fixed")

// SetLogLevel changes the level (debug, info, warn, error) of l and of every
// logger sharing its root.
func SetLogLevel(l *slog.Logger, level string) error {
	h, ok := l.Handler().(levelHandler)
	if !ok {
		return ErrFixedLevel
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("log level %q: %w", level, err)
	}
	h.level.Set(lv)
	return nil
}

// Component is what Run drives.
type Component interface {
	Start(ctx context.Context) error
	Shutdown(ctx context.Context) error
}

// Reloader is a Component that can re-read its config on SIGHUP. Reload
// applies what may change live and leaves the rest for a restart; an error
// means the running config is unchanged.
type Reloader interface {
	Reload(ctx context.Context) error
}

// Checker is a Component that can say whether its pipeline still answers.
// The watchdog pings only while Alive returns nil in time, so Alive must not
// fail for states a restart does not cure (a hub that is down, a full disk):
// it answers "wedged or not", not "healthy or not".
type Checker interface {
	Alive(ctx context.Context) error
}

var (
	// ErrDrainTimeout is returned by Run when Shutdown did not return within
	// the stop timeout; what was not drained is recovered on the next start.
	ErrDrainTimeout = errors.New("drain did not finish in time")
	// ErrDrainAborted is returned by Run when a second stop signal arrived
	// while draining: the operator asked not to wait.
	ErrDrainAborted = errors.New("drain aborted by a second signal")
)

// Options tune RunWith. Zero values are the production defaults.
type Options struct {
	// StopTimeout bounds the drain after SIGTERM or SIGINT. Keep it below
	// the unit's TimeoutStopSec, or systemd kills the drain half-way.
	StopTimeout time.Duration
	// ReloadTimeout bounds a reload (default 30s).
	ReloadTimeout time.Duration
	// Notifier talks to the service manager; nil reads NOTIFY_SOCKET and
	// WATCHDOG_USEC from the environment (and removes them from it).
	Notifier *sdnotify.Notifier
	// Signals replaces the process's SIGINT, SIGTERM and SIGHUP (tests).
	Signals <-chan os.Signal
}

// Run starts c and serves until SIGINT or SIGTERM, then drains it within
// stopTimeout. See RunWith.
func Run(c Component, log *slog.Logger, stopTimeout time.Duration) error {
	return RunWith(c, log, Options{StopTimeout: stopTimeout})
}

// RunWith starts c and runs the service's main loop: READY=1 once Start has
// returned, a watchdog ping on every watchdog tick while the loop turns (and
// c, if a Checker, answers), a reload on SIGHUP (if c is a Reloader), and on
// SIGTERM or SIGINT STOPPING=1 and c.Shutdown with opts.StopTimeout.
func RunWith(c Component, log *slog.Logger, opts Options) error {
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 30 * time.Second
	}
	if opts.ReloadTimeout <= 0 {
		opts.ReloadTimeout = 30 * time.Second
	}
	n := opts.Notifier
	if n == nil {
		var err error
		n, err = sdnotify.FromEnv(os.Getenv, os.Getpid())
		if err != nil {
			log.Warn("service manager settings ignored", "error", err)
		}
		// Only this process speaks for the service: plugin processes it
		// starts must not inherit the socket or the watchdog.
		for _, k := range []string{sdnotify.EnvSocket, sdnotify.EnvWatchdogUSec, sdnotify.EnvWatchdogPID} {
			_ = os.Unsetenv(k)
		}
	}
	sigs := opts.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(ch)
		sigs = ch
	}

	// The context outlives the signal: components stop in Shutdown, in their
	// drain order, not all at once when a signal cancels what Start got.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Start(ctx); err != nil {
		notify(log, n.Status("start failed: "+err.Error()))
		return err
	}
	notify(log, n.Ready("running"))
	log.Info("ready", "watchdog", n.WatchdogInterval(), "notify", n.Enabled())

	var check func(context.Context) error
	if ch, ok := c.(Checker); ok {
		check = ch.Alive
	}
	wd := n.NewWatchdog(check)
	defer wd.Stop()
	var wdErr error
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reload(ctx, c, n, log, opts.ReloadTimeout)
				continue
			}
			return drain(c, n, log, sig, sigs, opts.StopTimeout)
		case <-wd.C():
			err := wd.Beat(ctx)
			// Log changes, not every beat: systemd acts on the silence.
			if err != nil && wdErr == nil {
				log.Error("watchdog: not pinging the service manager; it restarts the service if this lasts", "error", err)
			} else if err == nil && wdErr != nil {
				log.Info("watchdog: pinging again")
			}
			wdErr = err
		}
	}
}

func reload(ctx context.Context, c Component, n *sdnotify.Notifier, log *slog.Logger, timeout time.Duration) {
	r, ok := c.(Reloader)
	if !ok {
		log.Warn("SIGHUP: this service cannot reload its config; restart it to apply changes")
		return
	}
	log.Info("SIGHUP: reloading config")
	notify(log, n.Reloading("reloading config"))
	rctx, cancel := context.WithTimeout(ctx, timeout)
	err := r.Reload(rctx)
	cancel()
	if err != nil {
		log.Error("reload failed; the running config is unchanged", "error", err)
		notify(log, n.Ready("running; last reload failed: "+err.Error()))
		return
	}
	notify(log, n.Ready("running"))
}

func drain(c Component, n *sdnotify.Notifier, log *slog.Logger, sig os.Signal, sigs <-chan os.Signal, timeout time.Duration) error {
	notify(log, n.Stopping("draining"))
	log.Info("signal received; draining", "signal", sig.String(), "timeout", timeout)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Shutdown(ctx) }()
	// A Shutdown that overruns its deadline gets a moment to return its
	// error before Run gives up on it.
	grace := time.NewTimer(timeout + max(timeout/10, 100*time.Millisecond))
	defer grace.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("shutdown: %w", err)
			}
			log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP {
				log.Warn("SIGHUP ignored while draining")
				continue
			}
			return fmt.Errorf("%w (%s)", ErrDrainAborted, s)
		case <-grace.C:
			return fmt.Errorf("%w: %s", ErrDrainTimeout, timeout)
		}
	}
}

// notify logs a failed notification; the daemon runs on regardless, and the
// service manager reports the missing READY=1 itself.
func notify(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("service manager notification failed", "error", err)
	}
}

// ChangedFields lists the YAML field paths (e.g. "buffer.overflow",
// "sources[1].brokers") whose values differ between two configs of the same
// type. Exported fields without a yaml tag count as inline, as do embedded
// ones; unexported fields are not config and are skipped. Reloads use it to
// tell which changes they can apply and which need a restart.
func ChangedFields(before, after any) []string {
	var out []string
	diffValue("", reflect.ValueOf(before), reflect.ValueOf(after), &out)
	slices.Sort(out)
	return slices.Compact(out)
}

func diffValue(path string, a, b reflect.Value, out *[]string) {
	if !a.IsValid() || !b.IsValid() {
		if a.IsValid() != b.IsValid() {
			*out = append(*out, path)
		}
		return
	}
	if a.Type() != b.Type() {
		*out = append(*out, path)
		return
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				*out = append(*out, path)
			}
			return
		}
		diffValue(path, a.Elem(), b.Elem(), out)
	case reflect.Struct:
		t := a.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" {
				continue
			}
			p := path
			if name != "" {
				p = join(path, name)
			}
			diffValue(p, a.Field(i), b.Field(i), out)
		}
	case reflect.Slice, reflect.Array:
		if a.Len() != b.Len() {
			*out = append(*out, path)
			return
		}
		for i := range a.Len() {
			diffValue(path+"["+strconv.Itoa(i)+"]", a.Index(i), b.Index(i), out)
		}
	case reflect.Func, reflect.Chan, reflect.UnsafePointer:
		// Not config: nothing to compare.
	case reflect.Map:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, path)
		}
	default:
		if !a.Equal(b) {
			*out = append(*out, path)
		}
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// StartCPUProfile writes a Go CPU profile to path until the returned
// function is called (the `run -cpuprofile` diagnostics flag). An empty
// path profiles nothing.
func StartCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}
