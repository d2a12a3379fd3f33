package delivery

import "time"

// BreakerState is the state of a destination's circuit breaker.
type BreakerState int

// Breaker states; the numbers are the breaker_state metric's values.
const (
	BreakerClosed   BreakerState = 0
	BreakerHalfOpen BreakerState = 1
	BreakerOpen     BreakerState = 2
)

func (s BreakerState) String() string {
	switch s {
	case BreakerHalfOpen:
		return "half_open"
	case BreakerOpen:
		return "open"
	}
	return "closed"
}

// breaker counts failed attempts in a row. It is not safe for concurrent
// use: the engine's mutex guards it.
type breaker struct {
	threshold int
	openFor   time.Duration

	state     BreakerState
	failures  int
	openUntil time.Time
	probing   bool
}

// allow reports whether an attempt may start now; probe is set for the one
// attempt that tests a half-open breaker. When not allowed, wait is how
// long until the state can change by itself (0: only another attempt's
// result changes it).
func (b *breaker) allow(now time.Time) (ok, probe bool, wait time.Duration) {
	switch b.state {
	case BreakerOpen:
		if now.Before(b.openUntil) {
			return false, false, b.openUntil.Sub(now)
		}
		b.state = BreakerHalfOpen
		fallthrough
	case BreakerHalfOpen:
		if b.probing {
			return false, false, 0
		}
		b.probing = true
		return true, true, 0
	}
	return true, false, 0
}

// success records an attempt the target answered; it reports whether the
// state changed.
func (b *breaker) success(probe bool) bool {
	b.failures = 0
	if probe {
		b.probing = false
	}
	if b.state == BreakerClosed {
		return false
	}
	if probe {
		b.state = BreakerClosed
		return true
	}
	return false
}

// failure records a failed attempt; it reports whether the state changed.
func (b *breaker) failure(probe bool, now time.Time) bool {
	b.failures++
	if probe {
		b.probing = false
		b.state, b.openUntil = BreakerOpen, now.Add(b.openFor)
		return true
	}
	if b.state == BreakerClosed && b.failures >= b.threshold {
		b.state, b.openUntil = BreakerOpen, now.Add(b.openFor)
		return true
	}
	return false
}

// release returns a probe that ended without an answer (shutdown, ledger
// error): the next attempt probes instead.
func (b *breaker) release(probe bool) {
	if probe {
		b.probing = false
	}
}
