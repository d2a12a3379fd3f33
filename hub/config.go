package hub

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/plantsync/plantsync/hub/alerts"
	"github.com/plantsync/plantsync/hub/auth"
	"github.com/plantsync/plantsync/hub/capture"
	"github.com/plantsync/plantsync/hub/delivery"
	"github.com/plantsync/plantsync/hub/ingest"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/partner"
	"github.com/plantsync/plantsync/hub/pipeline"
	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/internal/pki"
	"github.com/plantsync/plantsync/plugins/sdk"
)

// HTTP is the config key `http`: API, dashboard, /metrics, /healthz.
type HTTP struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
		// ClientCA, when set, makes the listener ask clients for a
		// certificate chaining to it (optional for each client): partners
		// configured with auth.client_cert present one (hub/partner).
		ClientCA string `yaml:"client_ca"`
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
	// OutboxRetention is how long delivered outbox entries are kept in
	// pipeline.db (0: for ever); pruned every retention.interval.
	OutboxRetention time.Duration `yaml:"outbox_retention"`
	// ResolvedRetention is how long resolved exceptions, decided approvals
	// and acknowledged alerts are kept in pipeline.db after the decision
	// (0: for ever); pruned every retention.interval.
	ResolvedRetention time.Duration `yaml:"resolved_retention"`
	// CommitInterval groups commits of several agents into one fsync.
	CommitInterval time.Duration `yaml:"commit_interval"`
}

// PKI is the config key `pki`: the folder `plantsync-hub pki` manages.
type PKI struct {
	Dir string `yaml:"dir"`
}

// Destination types.
const (
	// DestinationLog logs each entry and marks it delivered (built in).
	DestinationLog = "log"
	// DestinationPlugin delivers through a connector plugin (plugins:).
	DestinationPlugin = "plugin"
	// DestinationAlerts is the built-in alerts destination; it needs no
	// entry, and an entry may only name it.
	DestinationAlerts = "alerts"
)

// Destination is one entry of the config key `destinations`: where
// workflow actions are delivered. Type `plugin` delivers through a
// connector plugin declared under `plugins` (hub/delivery); type `log`
// logs each entry and marks it delivered. The built-in `alerts`
// destination always exists.
type Destination struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	// Plugin names an entry of `plugins` (type plugin).
	Plugin string `yaml:"plugin,omitempty"`
	// Config is the connector's own section, passed to its Configure (see
	// the plugin's README). Secret values are references (file:PATH or
	// env:NAME) under secret-named keys; the host resolves them.
	Config map[string]any `yaml:"config,omitempty"`
	// Secrets are further references (file:PATH or env:NAME) whose values
	// the host scrubs from everything the plugin logs or answers, e.g. a
	// password the plugin reads from its environment.
	Secrets []string `yaml:"secrets,omitempty"`
	// Delivery tunes retries, timeouts, concurrency and the breaker.
	Delivery delivery.Config `yaml:"delivery"`
	// Changes tunes change capture (hub/capture): the hub polls a
	// connector that offers the changes capability, e.g.
	// `changes: {poll_interval: 30s, plant: DE01}`.
	Changes capture.Config `yaml:"changes,omitempty"`
}

// Plugin is one entry of the config key `plugins`: a connector binary,
// pinned by its SHA-256 (`sha256sum PLUGIN`); the hub refuses a binary
// whose checksum differs. Destinations of type plugin refer to it by name;
// each such destination runs its own plugin process.
type Plugin struct {
	Name   string `yaml:"name"`
	Path   string `yaml:"path"`
	SHA256 string `yaml:"sha256"`
	// StartTimeout bounds process start plus Configure (default 10s).
	StartTimeout time.Duration `yaml:"start_timeout,omitempty"`
}

// Log is the config key `log`.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Config is the hub's whole configuration.
type Config struct {
	GRPC         ingest.Config    `yaml:"grpc"`
	HTTP         HTTP             `yaml:"http"`
	Storage      Storage          `yaml:"storage"`
	PKI          PKI              `yaml:"pki"`
	Pipeline     pipeline.Config  `yaml:"pipeline"`
	Destinations []Destination    `yaml:"destinations"`
	Plugins      []Plugin         `yaml:"plugins"`
	Partners     []partner.Config `yaml:"partners"`
	Log          Log              `yaml:"log"`
}

// NewDefaultConfig is the one place defaults are set.
func NewDefaultConfig() Config {
	return Config{
		GRPC: ingest.NewDefaultConfig(),
		HTTP: HTTP{Listen: "127.0.0.1:8080"},
		Storage: Storage{
			Dir:               "/var/lib/plantsync-hub",
			Retention:         journal.Retention{MaxAge: 30 * 24 * time.Hour, MaxBytes: 20 << 30, Interval: time.Minute},
			OutboxRetention:   30 * 24 * time.Hour,
			ResolvedRetention: 90 * 24 * time.Hour,
			CommitInterval:    time.Millisecond,
		},
		Pipeline: pipeline.NewDefaultConfig(),
		// The shipped workflows' destinations, as log destinations until
		// connectors are configured for them.
		Destinations: []Destination{
			{Name: pipeline.DestERP, Type: DestinationLog},
			{Name: pipeline.DestSupplierPortal, Type: DestinationLog},
			{Name: pipeline.DestPlanning, Type: DestinationLog},
			{Name: pipeline.DestReporting, Type: DestinationLog},
		},
		Log: Log{Level: "info", Format: "text"},
	}
}

var destinationName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// PipelineDestinations are the destinations as the pipeline sees them
// before any plugin has answered: a plugin destination accepts every
// action until its connector's Configure says which it performs
// (CheckPlugins, Hub.Start).
func (c *Config) PipelineDestinations() []pipeline.Destination { return c.pipelineDestinations(nil) }

// pipelineDestinations fills in the actions the connectors answered, by
// destination name.
func (c *Config) pipelineDestinations(actions map[string][]string) []pipeline.Destination {
	out := make([]pipeline.Destination, 0, len(c.Destinations))
	for _, d := range c.Destinations {
		pd := pipeline.Destination{Name: d.Name, Type: d.Type}
		switch d.Type {
		case DestinationAlerts:
			pd.Actions = []string{alerts.Action}
		case DestinationPlugin:
			if a, ok := actions[d.Name]; ok {
				pd.Actions = append([]string{}, a...)
			}
		}
		// A log destination accepts every action (nil list).
		out = append(out, pd)
	}
	return out
}

var pluginName = destinationName

func (c *Config) validateDestinations() []error {
	var errs []error
	seen := map[string]int{}
	plugins := map[string]bool{}
	for _, p := range c.Plugins {
		plugins[p.Name] = true
	}
	for i, d := range c.Destinations {
		p := fmt.Sprintf("destinations[%d]", i)
		switch {
		case !destinationName.MatchString(d.Name):
			errs = append(errs, fmt.Errorf("%s.name: %q; want lower-case letters, digits, _ or -, starting with a letter, e.g. erp", p, d.Name))
		case d.Name == alerts.Destination && d.Type != DestinationAlerts:
			errs = append(errs, fmt.Errorf("%s.name: %q is the built-in alerts destination; it needs no entry (or type: alerts)", p, d.Name))
		}
		if j, dup := seen[d.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already declared at destinations[%d]", p, d.Name, j))
		}
		seen[d.Name] = i
		switch d.Type {
		case DestinationLog, DestinationAlerts:
			if d.Type == DestinationAlerts && d.Name != alerts.Destination {
				errs = append(errs, fmt.Errorf("%s.type: alerts is the built-in destination named alerts; want type plugin or log for %q", p, d.Name))
			}
			if d.Plugin != "" || len(d.Config) > 0 || len(d.Secrets) > 0 {
				errs = append(errs, fmt.Errorf("%s: plugin, config and secrets belong to type plugin; remove them or set type: plugin", p))
			}
			if d.Changes != (capture.Config{}) {
				errs = append(errs, fmt.Errorf("%s.changes: change capture needs a connector; remove it or set type: plugin", p))
			}
		case DestinationPlugin:
			switch {
			case d.Plugin == "":
				errs = append(errs, fmt.Errorf("%s.plugin: required with type plugin; name an entry of plugins, e.g. webhook", p))
			case !plugins[d.Plugin]:
				errs = append(errs, fmt.Errorf("%s.plugin: %q is not declared; want an entry {name: %s, path: ..., sha256: ...} under plugins", p, d.Plugin, d.Plugin))
			}
			for j, ref := range d.Secrets {
				if !strings.HasPrefix(ref, "file:") && !strings.HasPrefix(ref, "env:") {
					errs = append(errs, fmt.Errorf("%s.secrets[%d]: want a reference, file:/path/to/secret or env:VARIABLE, never the secret itself", p, j))
				}
			}
			errs = append(errs, d.Delivery.Validate(p+".delivery")...)
			errs = append(errs, d.Changes.Validate(p+".changes")...)
		default:
			errs = append(errs, fmt.Errorf("%s.type: %q; want plugin (a connector declared under plugins) or log", p, d.Type))
		}
	}
	return errs
}

func (c *Config) validatePlugins() []error {
	var errs []error
	seen := map[string]int{}
	for i, pl := range c.Plugins {
		p := fmt.Sprintf("plugins[%d]", i)
		if !pluginName.MatchString(pl.Name) {
			errs = append(errs, fmt.Errorf("%s.name: %q; want lower-case letters, digits, _ or -, starting with a letter, e.g. webhook", p, pl.Name))
		}
		if j, dup := seen[pl.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already declared at plugins[%d]; use another name", p, pl.Name, j))
		}
		seen[pl.Name] = i
		if pl.Path == "" {
			errs = append(errs, fmt.Errorf("%s.path: required, e.g. /usr/lib/plantsync-hub/plugins/%s", p, pl.Name))
		}
		bin := pl.Path
		if bin == "" {
			bin = "PLUGIN"
		}
		if pl.SHA256 == "" {
			errs = append(errs, fmt.Errorf("%s.sha256: required; write the output of `sha256sum %s` here", p, bin))
		} else if _, err := sdk.ParseSHA256(pl.SHA256); err != nil {
			errs = append(errs, fmt.Errorf("%s.sha256: %q is not 64 hex digits; want what `sha256sum %s` prints", p, pl.SHA256, bin))
		}
		if pl.StartTimeout < 0 || pl.StartTimeout > 10*time.Minute {
			errs = append(errs, fmt.Errorf("%s.start_timeout: %s; want 1ms to 10m (0 for the default, 10s)", p, pl.StartTimeout))
		}
	}
	return errs
}

// plugin returns the plugins entry named name.
func (c *Config) plugin(name string) (Plugin, bool) {
	for _, p := range c.Plugins {
		if p.Name == name {
			return p, true
		}
	}
	return Plugin{}, false
}

// checkPluginFiles checks every plugin binary against its pinned checksum
// and resolves the destinations' secret references (files, environment).
func (c *Config) checkPluginFiles() []error {
	var errs []error
	for i, pl := range c.Plugins {
		if pl.Path == "" || pl.SHA256 == "" {
			continue // reported by Validate
		}
		if _, err := sdk.ParseSHA256(pl.SHA256); err != nil {
			continue
		}
		if err := sdk.VerifyChecksum(pl.Path, pl.SHA256); err != nil {
			if errors.Is(err, sdk.ErrChecksumMismatch) {
				// A binary nobody replaced on purpose may have been
				// tampered with: the hub never runs it.
				errs = append(errs, fmt.Errorf("plugins[%d].sha256: %w; otherwise check where the binary came from", i, err))
			} else {
				errs = append(errs, fmt.Errorf("plugins[%d].path: %w; check the path", i, err))
			}
		}
	}
	for i, d := range c.Destinations {
		if d.Type != DestinationPlugin {
			continue
		}
		p := fmt.Sprintf("destinations[%d]", i)
		if _, _, err := sdk.ResolveSecrets(p+".config", d.Config); err != nil {
			errs = append(errs, err)
		}
		for j, ref := range d.Secrets {
			if _, err := config.Secret(fmt.Sprintf("%s.secrets[%d]", p, j), ref); err != nil && (strings.HasPrefix(ref, "file:") || strings.HasPrefix(ref, "env:")) {
				errs = append(errs, err)
			}
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
	if c.Storage.OutboxRetention < 0 {
		errs = append(errs, errors.New("storage.outbox_retention: must not be negative (0 keeps delivered entries for ever), e.g. 720h"))
	}
	if c.Storage.ResolvedRetention < 0 {
		errs = append(errs, errors.New("storage.resolved_retention: must not be negative (0 keeps resolved exceptions, decided approvals and acknowledged alerts for ever), e.g. 2160h"))
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
	errs = append(errs, c.validatePlugins()...)
	errs = append(errs, c.validateDestinations()...)
	errs = append(errs, c.Pipeline.Validate("pipeline", c.PipelineDestinations())...)
	if c.HTTP.TLS.ClientCA != "" && c.HTTP.TLS.Cert == "" {
		errs = append(errs, errors.New("http.tls.client_ca: client certificates need HTTPS; set http.tls.cert and http.tls.key too"))
	}
	errs = append(errs, partner.Validate("partners", c.Partners, c.HTTP.TLS.ClientCA != "")...)
	return errs
}

func (c *Config) checkFiles(now time.Time) []error {
	var errs []error
	readable := map[string]bool{} // the files that parsed, by field
	for _, f := range [][2]string{{"grpc.tls.cert", c.GRPC.TLS.Cert}, {"grpc.tls.client_ca", c.GRPC.TLS.ClientCA}, {"http.tls.cert", c.HTTP.TLS.Cert}, {"http.tls.client_ca", c.HTTP.TLS.ClientCA}} {
		if f[1] == "" {
			continue
		}
		cert, err := pki.CheckCertFile(f[1], now)
		readable[f[0]] = cert != nil
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %v", f[0], err))
		case f[0] == "grpc.tls.client_ca" && !cert.IsCA:
			// Otherwise the hub would fail only when it starts.
			errs = append(errs, fmt.Errorf("%s: %s holds %q, not a CA certificate; use ca.crt from the folder `plantsync-hub pki init` made", f[0], f[1], cert.Subject.CommonName))
		case f[0] == "http.tls.client_ca" && !cert.IsCA:
			errs = append(errs, fmt.Errorf("%s: %s holds %q, not a CA certificate; use the CA that issues the partners' client certificates", f[0], f[1], cert.Subject.CommonName))
		}
	}
	for _, f := range [][2]string{{"grpc.tls.key", c.GRPC.TLS.Key}, {"http.tls.key", c.HTTP.TLS.Key}} {
		if f[1] == "" {
			continue
		}
		key, err := pki.CheckKeyFile(f[1])
		readable[f[0]] = key != nil
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", f[0], err))
		}
	}
	// Compare the pair only when both files could be read: a missing or
	// unparsable file is reported above already.
	if readable["grpc.tls.cert"] && readable["grpc.tls.key"] {
		if err := pki.CheckPair(c.GRPC.TLS.Cert, c.GRPC.TLS.Key); err != nil {
			errs = append(errs, fmt.Errorf("grpc.tls.key: %v", err))
		}
	}
	if f := c.HTTP.Auth.TokensFile; f != "" {
		if err := auth.Check(f); err != nil {
			errs = append(errs, fmt.Errorf("http.auth.tokens_file: %v", err))
		}
	}
	errs = append(errs, c.Pipeline.CheckFiles("pipeline", c.PipelineDestinations())...)
	errs = append(errs, c.checkPluginFiles()...)
	errs = append(errs, partner.CheckFiles("partners", c.Partners)...)
	return errs
}

// JournalPath is where the journal file lives.
func (c *Config) JournalPath() string { return filepath.Join(c.Storage.Dir, "journal.db") }
