package capture

import (
	"fmt"
	"time"
)

// Config is a destination's `changes` section.
//
//	changes:
//	  poll_interval: 30s
//	  page_size: 100
//	  plant: DE01
type Config struct {
	// Disabled turns capture off for a connector that offers it.
	Disabled bool `yaml:"disabled"`
	// PollInterval is the time between polls (default 30s).
	PollInterval time.Duration `yaml:"poll_interval"`
	// PageSize bounds the changes asked for per call (default 100).
	PageSize int `yaml:"page_size"`
	// Plant is the plant code of events whose document names none.
	Plant string `yaml:"plant"`
}

// Defaults.
const (
	DefaultPollInterval = 30 * time.Second
	DefaultPageSize     = 100
)

// WithDefaults returns c with zero values replaced by the defaults; a
// destination's section is optional, so this is the one place they are set.
func (c Config) WithDefaults() Config {
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	return c
}

// Validate checks the section; path is its config path, e.g.
// "destinations[0].changes".
func (c Config) Validate(path string) []error {
	var errs []error
	if c.PollInterval < 0 || (c.PollInterval > 0 && c.PollInterval < 10*time.Millisecond) || c.PollInterval > 24*time.Hour {
		errs = append(errs, fmt.Errorf("%s.poll_interval: %s; want 10ms to 24h, e.g. 30s (0 for the default, 30s)", path, c.PollInterval))
	}
	if c.PageSize < 0 || c.PageSize > 1000 {
		errs = append(errs, fmt.Errorf("%s.page_size: %d; want 1 to 1000 (0 for the default, 100)", path, c.PageSize))
	}
	return errs
}
