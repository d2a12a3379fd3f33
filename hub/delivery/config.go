package delivery

import (
	"fmt"
	"time"
)

// Config is the `delivery:` section of a connector destination. A zero
// field takes its default from NewDefaultConfig.
type Config struct {
	// MaxAttempts bounds the attempts of one entry (1: no retries); when
	// they are used up the entry is parked as an exception.
	MaxAttempts int `yaml:"max_attempts"`
	// BackoffInitial is the wait before the first retry; each further
	// retry doubles it, up to BackoffMax. The actual wait is drawn between
	// half and all of it (jitter), so keys failing together do not retry
	// in lockstep.
	BackoffInitial time.Duration `yaml:"backoff_initial"`
	BackoffMax     time.Duration `yaml:"backoff_max"`
	// Timeout bounds one call into the connector (Deliver or Lookup).
	Timeout time.Duration `yaml:"timeout"`
	// Concurrency is how many ordering keys are delivered at the same time.
	Concurrency int           `yaml:"concurrency"`
	Breaker     BreakerConfig `yaml:"breaker"`
}

// BreakerConfig is the circuit breaker of a destination: after Failures
// failed attempts in a row (retryable outcomes, errors, timeouts; not
// permanent refusals, which the target answered) it opens and no entry is
// attempted for OpenFor; then one attempt probes the target and closes the
// breaker when it succeeds, or opens it again.
type BreakerConfig struct {
	Failures int           `yaml:"failures"`
	OpenFor  time.Duration `yaml:"open_for"`
}

// NewDefaultConfig is the one place the defaults are set.
func NewDefaultConfig() Config {
	return Config{
		MaxAttempts:    10,
		BackoffInitial: time.Second,
		BackoffMax:     5 * time.Minute,
		Timeout:        30 * time.Second,
		Concurrency:    8,
		Breaker:        BreakerConfig{Failures: 5, OpenFor: 30 * time.Second},
	}
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	d := NewDefaultConfig()
	if c.MaxAttempts == 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.BackoffInitial == 0 {
		c.BackoffInitial = d.BackoffInitial
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = max(d.BackoffMax, c.BackoffInitial)
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.Concurrency == 0 {
		c.Concurrency = d.Concurrency
	}
	if c.Breaker.Failures == 0 {
		c.Breaker.Failures = d.Breaker.Failures
	}
	if c.Breaker.OpenFor == 0 {
		c.Breaker.OpenFor = d.Breaker.OpenFor
	}
	return c
}

// Validate checks the section (no files, no network); prefix is its path,
// e.g. destinations[0].delivery. Zero values mean the default.
func (c Config) Validate(prefix string) []error {
	var errs []error
	dur := func(key string, v, lo, hi time.Duration, example string) {
		if v != 0 && (v < lo || v > hi) {
			errs = append(errs, fmt.Errorf("%s.%s: %s; want %s to %s, e.g. %s (0 or absent for the default)", prefix, key, v, lo, hi, example))
		}
	}
	if c.MaxAttempts < 0 || c.MaxAttempts > 1000 {
		errs = append(errs, fmt.Errorf("%s.max_attempts: %d; want 1 (no retries) to 1000, e.g. 10", prefix, c.MaxAttempts))
	}
	dur("backoff_initial", c.BackoffInitial, time.Millisecond, time.Hour, "1s")
	dur("backoff_max", c.BackoffMax, time.Millisecond, 24*time.Hour, "5m")
	dur("timeout", c.Timeout, time.Millisecond, time.Hour, "30s")
	dur("breaker.open_for", c.Breaker.OpenFor, time.Millisecond, time.Hour, "30s")
	if d := c.WithDefaults(); d.BackoffMax < d.BackoffInitial {
		errs = append(errs, fmt.Errorf("%s.backoff_max: %s is below backoff_initial %s; want at least backoff_initial", prefix, d.BackoffMax, d.BackoffInitial))
	}
	if c.Concurrency < 0 || c.Concurrency > 1024 {
		errs = append(errs, fmt.Errorf("%s.concurrency: %d; want 1 to 1024 ordering keys at a time, e.g. 8", prefix, c.Concurrency))
	}
	if c.Breaker.Failures < 0 || c.Breaker.Failures > 10000 {
		errs = append(errs, fmt.Errorf("%s.breaker.failures: %d; want 1 to 10000 failed attempts in a row, e.g. 5", prefix, c.Breaker.Failures))
	}
	return errs
}
