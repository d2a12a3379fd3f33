package uplink

import (
	"fmt"
	"net"
	"time"
)

// TLSConfig names the agent's client certificate and the hub's CA.
type TLSConfig struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the hub's certificate.
	ServerName string `yaml:"server_name"`
}

// Config is the agent config key `uplink`.
type Config struct {
	// Hub is the hub's gRPC address, host:port.
	Hub string    `yaml:"hub"`
	TLS TLSConfig `yaml:"tls"`
	// BatchMaxEvents and BatchMaxBytes bound one batch.
	BatchMaxEvents int `yaml:"batch_max_events"`
	BatchMaxBytes  int `yaml:"batch_max_bytes"`
	// MaxInflight bounds unacknowledged batches (the hub may lower it).
	MaxInflight int `yaml:"max_inflight"`
	// BackoffInitial and BackoffMax bound the reconnect delay.
	BackoffInitial time.Duration `yaml:"backoff_initial"`
	BackoffMax     time.Duration `yaml:"backoff_max"`
	// StatusInterval is how often buffer depth is reported to the hub.
	StatusInterval time.Duration `yaml:"status_interval"`
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	return Config{
		BatchMaxEvents: 1000,
		BatchMaxBytes:  1 << 20,
		MaxInflight:    8,
		BackoffInitial: 250 * time.Millisecond,
		BackoffMax:     30 * time.Second,
		StatusInterval: 5 * time.Second,
	}
}

// Validate checks the config without touching the network or files.
func (c Config) Validate(prefix string) []error {
	var errs []error
	if c.Hub == "" {
		errs = append(errs, fmt.Errorf("%s.hub: required; the hub's gRPC address, e.g. hub.example.net:7443", prefix))
	} else if _, _, err := net.SplitHostPort(c.Hub); err != nil {
		errs = append(errs, fmt.Errorf("%s.hub: %q is not host:port; want e.g. hub.example.net:7443", prefix, c.Hub))
	}
	for _, f := range [][2]string{{"ca", c.TLS.CA}, {"cert", c.TLS.Cert}, {"key", c.TLS.Key}} {
		if field, v := f[0], f[1]; v == "" {
			errs = append(errs, fmt.Errorf("%s.tls.%s: required; the uplink always uses mTLS (see `plantsync-agent pki csr`)", prefix, field))
		}
	}
	if c.BatchMaxEvents < 1 || c.BatchMaxEvents > 100000 {
		errs = append(errs, fmt.Errorf("%s.batch_max_events: %d out of range; want 1 to 100000, e.g. 1000", prefix, c.BatchMaxEvents))
	}
	if c.BatchMaxBytes < 1024 || c.BatchMaxBytes > 8<<20 {
		errs = append(errs, fmt.Errorf("%s.batch_max_bytes: %d out of range; want 1024 to 8388608, e.g. 1048576", prefix, c.BatchMaxBytes))
	}
	if c.MaxInflight < 1 || c.MaxInflight > 1024 {
		errs = append(errs, fmt.Errorf("%s.max_inflight: %d out of range; want 1 to 1024, e.g. 8", prefix, c.MaxInflight))
	}
	if c.BackoffInitial <= 0 || c.BackoffMax < c.BackoffInitial {
		errs = append(errs, fmt.Errorf("%s.backoff_initial/backoff_max: want 0 < backoff_initial <= backoff_max, e.g. 250ms and 30s", prefix))
	}
	if c.StatusInterval <= 0 {
		errs = append(errs, fmt.Errorf("%s.status_interval: must be positive, e.g. 5s", prefix))
	}
	return errs
}
