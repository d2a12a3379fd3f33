package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrCheckTimeout is returned by Beat when the liveness check did not answer
// in time; no ping was sent.
var ErrCheckTimeout = errors.New("liveness check did not answer")

// Watchdog paces the pings of a daemon's main loop. The loop selects on C
// and calls Beat on every tick; Beat pings only once check has answered nil
// within its deadline. So a main loop that stops turning, or a pipeline that
// stops answering, stops the pings, and the service manager kills and
// restarts the daemon after WatchdogSec. It is not safe for concurrent use:
// it belongs to the one loop that feeds it.
type Watchdog struct {
	n       *Notifier
	check   func(context.Context) error
	timeout time.Duration
	ticker  *time.Ticker
	pending chan error // non-nil while a check runs
}

// NewWatchdog returns the main loop's watchdog. check (nil: none) is asked
// on every tick whether the pipeline still answers; it gets a quarter of the
// watchdog interval. Without an armed watchdog, C never fires.
func (n *Notifier) NewWatchdog(check func(context.Context) error) *Watchdog {
	w := &Watchdog{n: n, check: check}
	if iv := n.WatchdogInterval(); iv > 0 {
		// Half the interval, as sd_watchdog_enabled(3) advises: one late or
		// failed beat does not get the daemon killed, two do.
		w.ticker = time.NewTicker(iv / 2)
		w.timeout = iv / 4
	}
	return w
}

// C delivers the ticks the main loop selects on; nil (never ready) when no
// watchdog is armed.
func (w *Watchdog) C() <-chan time.Time {
	if w.ticker == nil {
		return nil
	}
	return w.ticker.C
}

// Beat runs the liveness check and, if it passes, pings the service manager.
func (w *Watchdog) Beat(ctx context.Context) error {
	if w.check != nil {
		if err := w.runCheck(ctx); err != nil {
			return err
		}
	}
	return w.n.Ping()
}

func (w *Watchdog) runCheck(ctx context.Context) error {
	if w.pending == nil {
		w.pending = make(chan error, 1)
		ctx, cancel := context.WithTimeout(ctx, w.timeout)
		go func(done chan<- error) {
			defer cancel()
			done <- w.check(ctx)
		}(w.pending)
	}
	// A check that ignores its context keeps running; it is waited for on
	// the next beats instead of starting another beside it.
	t := time.NewTimer(w.timeout)
	defer t.Stop()
	select {
	case err := <-w.pending:
		w.pending = nil
		if err != nil {
			return fmt.Errorf("liveness check: %w", err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%w within %s", ErrCheckTimeout, w.timeout)
	}
}

// Stop releases the ticker. A check still running is left to finish.
func (w *Watchdog) Stop() {
	if w.ticker != nil {
		w.ticker.Stop()
	}
}
