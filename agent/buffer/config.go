package buffer

import (
	"fmt"
	"time"
)

// Overflow policies.
const (
	OverflowBlock      = "block"
	OverflowDropOldest = "drop_oldest"
)

// Config configures the buffer (agent config key `buffer`).
type Config struct {
	// MaxBytes bounds the stored events (encoded size plus key).
	MaxBytes int64 `yaml:"max_bytes"`
	// Overflow is "block" (default) or "drop_oldest".
	Overflow string `yaml:"overflow"`
	// CommitInterval is the longest an append waits for companions before
	// its group is committed.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// CommitMaxEvents closes a group early once it holds this many events.
	CommitMaxEvents int `yaml:"commit_max_events"`
	// OpenTimeout bounds waiting for the file lock (another agent running).
	OpenTimeout time.Duration `yaml:"open_timeout"`
}

// NewDefaultConfig returns the defaults: 1 GiB, block, 2 ms groups of up to
// 8192 events.
func NewDefaultConfig() Config {
	return Config{
		MaxBytes:        1 << 30,
		Overflow:        OverflowBlock,
		CommitInterval:  2 * time.Millisecond,
		CommitMaxEvents: 8192,
		OpenTimeout:     2 * time.Second,
	}
}

// Validate reports every problem, each prefixed by its field path under
// prefix (e.g. "buffer").
func (c Config) Validate(prefix string) []error {
	var errs []error
	if c.MaxBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("%s.max_bytes: %d is too small; want at least 65536 (64 KiB), e.g. 1073741824 for 1 GiB", prefix, c.MaxBytes))
	}
	if c.Overflow != OverflowBlock && c.Overflow != OverflowDropOldest {
		errs = append(errs, fmt.Errorf("%s.overflow: %q is not a policy; want %q or %q", prefix, c.Overflow, OverflowBlock, OverflowDropOldest))
	}
	if c.CommitInterval < 0 || c.CommitInterval > time.Second {
		errs = append(errs, fmt.Errorf("%s.commit_interval: %s is out of range; want 0 to 1s, e.g. 2ms", prefix, c.CommitInterval))
	}
	if c.CommitMaxEvents < 1 || c.CommitMaxEvents > 1<<20 {
		errs = append(errs, fmt.Errorf("%s.commit_max_events: %d is out of range; want 1 to 1048576, e.g. 8192", prefix, c.CommitMaxEvents))
	}
	if c.OpenTimeout <= 0 {
		errs = append(errs, fmt.Errorf("%s.open_timeout: must be positive, e.g. 2s", prefix))
	}
	return errs
}
