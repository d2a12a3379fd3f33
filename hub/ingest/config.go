package ingest

import (
	"fmt"
	"net"
)

// TLSConfig names the hub's certificate and the CA agents must chain to.
type TLSConfig struct {
	Cert     string `yaml:"cert"`
	Key      string `yaml:"key"`
	ClientCA string `yaml:"client_ca"`
}

// Config is the hub config key `grpc`.
type Config struct {
	Listen string    `yaml:"listen"`
	TLS    TLSConfig `yaml:"tls"`
	// MaxInflightBatches is offered to agents: unacked batches per stream.
	MaxInflightBatches uint32 `yaml:"max_inflight_batches"`
	// MaxBatchEvents is offered to agents and enforced.
	MaxBatchEvents uint32 `yaml:"max_batch_events"`
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	return Config{Listen: "127.0.0.1:7443", MaxInflightBatches: 8, MaxBatchEvents: 2000}
}

// Validate checks the config without touching the network or files.
func (c Config) Validate(prefix string) []error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("%s.listen: %q is not host:port; want e.g. 0.0.0.0:7443", prefix, c.Listen))
	}
	for _, f := range [][2]string{{"cert", c.TLS.Cert}, {"key", c.TLS.Key}, {"client_ca", c.TLS.ClientCA}} {
		if field, v := f[0], f[1]; v == "" {
			errs = append(errs, fmt.Errorf("%s.tls.%s: required; the hub accepts agents only over mTLS (make them with `plantsync-hub pki init -dir DIR`)", prefix, field))
		}
	}
	if c.MaxInflightBatches < 1 || c.MaxInflightBatches > 1024 {
		errs = append(errs, fmt.Errorf("%s.max_inflight_batches: %d out of range; want 1 to 1024, e.g. 8", prefix, c.MaxInflightBatches))
	}
	if c.MaxBatchEvents < 1 || c.MaxBatchEvents > 100000 {
		errs = append(errs, fmt.Errorf("%s.max_batch_events: %d out of range; want 1 to 100000, e.g. 2000", prefix, c.MaxBatchEvents))
	}
	return errs
}
