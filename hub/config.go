package hub

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"time"

	"github.com/plantsync/plantsync/hub/alerts"
	"github.com/plantsync/plantsync/hub/auth"
	"github.com/plantsync/plantsync/hub/ingest"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/pipeline"
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
	Auth HTTPAuth `yaml:"auth"`
	// OpsListen, when set, is a second, plain-HTTP listener serving only
	// /healthz and /metrics (no token), e.g. for a monitoring network while
	// the API listener stays private. The API listener serves them too.
	OpsListen string `yaml:"ops_listen"`
}

// HTTPAuth is the config key `http.auth`. Every /api/v1 endpoint needs a
// bearer token listed in the tokens file (hub/auth); without one the API
// answers 401 to everything. /healthz and /metrics stay open.
type HTTPAuth struct {
	TokensFile string `yaml:"tokens_file"`
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

// Destination is one entry of the config key `destinations`: where
// workflow actions are delivered. This hub version delivers to type `log`
// (logs each entry and marks it delivered); connector types arrive with
// the plugin SDK. The built-in `alerts` destination always exists.
type Destination struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
}

// Plugins and Partners are the keys later parts of the hub fill in; they
// exist now so configs keep their shape.
type (
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
	GRPC         ingest.Config   `yaml:"grpc"`
	HTTP         HTTP            `yaml:"http"`
	Storage      Storage         `yaml:"storage"`
	PKI          PKI             `yaml:"pki"`
	Pipeline     pipeline.Config `yaml:"pipeline"`
	Destinations []Destination   `yaml:"destinations"`
	Plugins      []Plugin        `yaml:"plugins"`
	Partners     []Partner       `yaml:"partners"`
	Log          Log             `yaml:"log"`
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
		Pipeline: pipeline.NewDefaultConfig(),
		// The shipped workflows' destinations, as log destinations until
		// connectors are configured for them.
		Destinations: []Destination{
			{Name: pipeline.DestERP, Type: "log"},
			{Name: pipeline.DestSupplierPortal, Type: "log"},
			{Name: pipeline.DestPlanning, Type: "log"},
			{Name: pipeline.DestReporting, Type: "log"},
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

var destinationName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// PipelineDestinations are the destinations as the pipeline sees them.
func (c *Config) PipelineDestinations() []pipeline.Destination {
	out := make([]pipeline.Destination, 0, len(c.Destinations))
	for _, d := range c.Destinations {
		// A log destination accepts every action (nil list).
		out = append(out, pipeline.Destination{Name: d.Name, Type: d.Type})
	}
	return out
}

func (c *Config) validateDestinations() []error {
	var errs []error
	seen := map[string]int{}
	for i, d := range c.Destinations {
		p := fmt.Sprintf("destinations[%d]", i)
		switch {
		case !destinationName.MatchString(d.Name):
			errs = append(errs, fmt.Errorf("%s.name: %q; want lower-case letters, digits, _ or -, starting with a letter, e.g. erp", p, d.Name))
		case d.Name == alerts.Destination:
			errs = append(errs, fmt.Errorf("%s.name: %q is the built-in alerts destination; it needs no entry", p, d.Name))
		}
		if j, dup := seen[d.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already declared at destinations[%d]", p, d.Name, j))
		}
		seen[d.Name] = i
		if d.Type != "log" {
			errs = append(errs, fmt.Errorf("%s.type: %q is not supported by this hub version; want log (connector types arrive with plugins)", p, d.Type))
		}
	}
	return errs
}

// LoadConfig reads, strictly decodes and validates a hub config, including
// referenced files and certificates.
func LoadConfig(path string) (Config, error) {
	cfg := NewDefaultConfig()
	// Key and type problems do not stop decoding, so they are reported
	// together with everything Validate and the file checks find.
	errs, err := config.LoadAll(path, &cfg)
	if err != nil {
		return cfg, err
	}
	errs = append(errs, cfg.Validate()...)
	errs = append(errs, cfg.checkFiles(time.Now())...)
	return cfg, config.Join(path, errs)
}

// Validate checks everything that needs no network or files.
func (c *Config) Validate() []error {
	errs := c.GRPC.Validate("grpc")
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		errs = append(errs, fmt.Errorf("http.listen: %q is not host:port; want e.g. 127.0.0.1:8080", c.HTTP.Listen))
	}
	if c.HTTP.OpsListen != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.OpsListen); err != nil {
			errs = append(errs, fmt.Errorf("http.ops_listen: %q is not host:port; want e.g. 0.0.0.0:9465, or leave it empty", c.HTTP.OpsListen))
		}
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
	errs = append(errs, c.validateDestinations()...)
	errs = append(errs, c.Pipeline.Validate("pipeline", c.PipelineDestinations())...)
	for _, s := range []struct {
		key string
		n   int
	}{{"plugins", len(c.Plugins)}, {"partners", len(c.Partners)}} {
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
		cert, err := pki.CheckCertFile(f[1], now)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %v", f[0], err))
		case f[0] == "grpc.tls.client_ca" && !cert.IsCA:
			// Otherwise the hub would fail only when it starts.
			errs = append(errs, fmt.Errorf("%s: %s holds %q, not a CA certificate; use ca.crt from the folder `plantsync-hub pki init` made", f[0], f[1], cert.Subject.CommonName))
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
	// Compare the pair only when both files could be read: a missing or
	// unparsable file is reported above already.
	if cert, _ := pki.CheckCertFile(c.GRPC.TLS.Cert, now); cert != nil {
		if key, _ := pki.CheckKeyFile(c.GRPC.TLS.Key); key != nil {
			if err := pki.CheckPair(c.GRPC.TLS.Cert, c.GRPC.TLS.Key); err != nil {
				errs = append(errs, fmt.Errorf("grpc.tls.key: %v", err))
			}
		}
	}
	if f := c.HTTP.Auth.TokensFile; f != "" {
		if err := auth.Check(f); err != nil {
			errs = append(errs, fmt.Errorf("http.auth.tokens_file: %v", err))
		}
	}
	errs = append(errs, c.Pipeline.CheckFiles("pipeline", c.PipelineDestinations())...)
	return errs
}

// JournalPath is where the journal file lives.
func (c *Config) JournalPath() string { return filepath.Join(c.Storage.Dir, "journal.db") }
