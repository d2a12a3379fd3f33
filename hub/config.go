package hub

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/plantsync/plantsync/hub/ingest"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/internal/pki"
)

// HTTP is the config key `http`: API, dashboard, /metrics, /healthz.
type HTTP struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
}

// Storage is the config key `storage`.
type Storage struct {
	Dir       string            `yaml:"dir"`
	Retention journal.Retention `yaml:"retention"`
	// CommitInterval groups commits of several agents into one fsync.
	CommitInterval time.Duration `yaml:"commit_interval"`
}

// PKI is the config key `pki`: the folder `plantsync-hub pki` manages.
type PKI struct {
	Dir string `yaml:"dir"`
}

// Pipeline, Destinations, Plugins and Partners are the keys later parts of
// the hub fill in; they exist now so configs keep their shape.
type (
	Pipeline    struct{}
	Destination struct {
		Name string `yaml:"name"`
	}
	Plugin struct {
		Name string `yaml:"name"`
	}
	Partner struct {
		Name string `yaml:"name"`
	}
)

// Log is the config key `log`.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Config is the hub's whole configuration.
type Config struct {
	GRPC         ingest.Config `yaml:"grpc"`
	HTTP         HTTP          `yaml:"http"`
	Storage      Storage       `yaml:"storage"`
	PKI          PKI           `yaml:"pki"`
	Pipeline     Pipeline      `yaml:"pipeline"`
	Destinations []Destination `yaml:"destinations"`
	Plugins      []Plugin      `yaml:"plugins"`
	Partners     []Partner     `yaml:"partners"`
	Log          Log           `yaml:"log"`
}

// NewDefaultConfig is the one place defaults are set.
func NewDefaultConfig() Config {
	return Config{
		GRPC: ingest.NewDefaultConfig(),
		HTTP: HTTP{Listen: "127.0.0.1:8080"},
		Storage: Storage{
			Dir:            "/var/lib/plantsync-hub",
			Retention:      journal.Retention{MaxAge: 30 * 24 * time.Hour, MaxBytes: 20 << 30, Interval: time.Minute},
			CommitInterval: time.Millisecond,
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

// LoadConfig reads, strictly decodes and validates a hub config, including
// referenced files and certificates.
func LoadConfig(path string) (Config, error) {
	cfg := NewDefaultConfig()
	if err := config.Load(path, &cfg); err != nil {
		return cfg, err
	}
	errs := cfg.Validate()
	errs = append(errs, cfg.checkFiles(time.Now())...)
	return cfg, config.Join(path, errs)
}

// Validate checks everything that needs no network or files.
func (c *Config) Validate() []error {
	errs := c.GRPC.Validate("grpc")
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		errs = append(errs, fmt.Errorf("http.listen: %q is not host:port; want e.g. 127.0.0.1:8080", c.HTTP.Listen))
	}
	if (c.HTTP.TLS.Cert == "") != (c.HTTP.TLS.Key == "") {
		errs = append(errs, errors.New("http.tls: set both cert and key, or neither for plain HTTP"))
	}
	if c.Storage.Dir == "" {
		errs = append(errs, errors.New("storage.dir: required, e.g. /var/lib/plantsync-hub"))
	}
	if c.Storage.Retention.MaxAge < 0 || c.Storage.Retention.MaxBytes < 0 {
		errs = append(errs, errors.New("storage.retention: max_age and max_bytes must not be negative (0 disables a bound)"))
	}
	if c.Storage.Retention.Interval <= 0 {
		errs = append(errs, errors.New("storage.retention.interval: must be positive, e.g. 1m"))
	}
	if c.Storage.CommitInterval < 0 || c.Storage.CommitInterval > time.Second {
		errs = append(errs, fmt.Errorf("storage.commit_interval: %s; want 0 to 1s, e.g. 1ms", c.Storage.CommitInterval))
	}
	if !map[string]bool{"debug": true, "info": true, "warn": true, "error": true}[c.Log.Level] {
		errs = append(errs, fmt.Errorf("log.level: %q; want debug, info, warn or error", c.Log.Level))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format: %q; want text or json", c.Log.Format))
	}
	for _, s := range []struct {
		key string
		n   int
	}{{"destinations", len(c.Destinations)}, {"plugins", len(c.Plugins)}, {"partners", len(c.Partners)}} {
		if s.n > 0 {
			errs = append(errs, fmt.Errorf("%s: not supported by this hub version yet; remove the entries", s.key))
		}
	}
	return errs
}

func (c *Config) checkFiles(now time.Time) []error {
	var errs []error
	for _, f := range [][2]string{{"grpc.tls.cert", c.GRPC.TLS.Cert}, {"grpc.tls.client_ca", c.GRPC.TLS.ClientCA}, {"http.tls.cert", c.HTTP.TLS.Cert}} {
		if f[1] == "" {
			continue
		}
		if _, err := pki.CheckCertFile(f[1], now); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", f[0], err))
		}
	}
	for _, f := range [][2]string{{"grpc.tls.key", c.GRPC.TLS.Key}, {"http.tls.key", c.HTTP.TLS.Key}} {
		if f[1] == "" {
			continue
		}
		if _, err := pki.CheckKeyFile(f[1]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", f[0], err))
		}
	}
	if c.GRPC.TLS.Cert != "" && c.GRPC.TLS.Key != "" {
		if err := pki.CheckPair(c.GRPC.TLS.Cert, c.GRPC.TLS.Key); err != nil {
			errs = append(errs, fmt.Errorf("grpc.tls.key: %v", err))
		}
	}
	return errs
}

// JournalPath is where the journal file lives.
func (c *Config) JournalPath() string { return filepath.Join(c.Storage.Dir, "journal.db") }
