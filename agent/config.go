package agent

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/agent/uplink"
	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/internal/pki"
)

// Identity is the config key `agent`.
type Identity struct {
	// ID must match the CN of the agent's client certificate.
	ID    string `yaml:"id"`
	Plant string `yaml:"plant"`
	// StateDir holds the buffer and generated files.
	StateDir string `yaml:"state_dir"`
}

// Metrics is the config key `metrics`: the admin listener.
type Metrics struct {
	// Listen serves /metrics, /healthz and /api/v1 on loopback by default.
	Listen string `yaml:"listen"`
}

// Log is the config key `log`.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// SourceEntry is one element of `sources`, decoded by its type.
type SourceEntry struct {
	source.Common
	Config source.Config
	line   int
	node   *yaml.Node
}

// UnmarshalYAML keeps the node; Resolve decodes it once types are known.
func (e *SourceEntry) UnmarshalYAML(n *yaml.Node) error {
	e.node, e.line = n, n.Line
	var c struct {
		Name string `yaml:"name"`
		Type string `yaml:"type"`
	}
	// Only name and type here; the strict decode happens in Resolve.
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch n.Content[i].Value {
		case "name":
			c.Name = n.Content[i+1].Value
		case "type":
			c.Type = n.Content[i+1].Value
		}
	}
	e.Name, e.Type = c.Name, c.Type
	return nil
}

// Config is the agent's whole configuration.
type Config struct {
	Agent   Identity      `yaml:"agent"`
	Uplink  uplink.Config `yaml:"uplink"`
	Buffer  buffer.Config `yaml:"buffer"`
	Sources []SourceEntry `yaml:"sources"`
	Metrics Metrics       `yaml:"metrics"`
	Log     Log           `yaml:"log"`
}

// NewDefaultConfig is the one place defaults are set.
func NewDefaultConfig() Config {
	return Config{
		Agent:   Identity{StateDir: "/var/lib/plantsync-agent"},
		Uplink:  uplink.NewDefaultConfig(),
		Buffer:  buffer.NewDefaultConfig(),
		Metrics: Metrics{Listen: "127.0.0.1:9464"},
		Log:     Log{Level: "info", Format: "text"},
	}
}

// LoadConfig reads, decodes (strictly) and validates a config file,
// including checks of referenced files and certificates.
func LoadConfig(path string) (Config, error) {
	cfg := NewDefaultConfig()
	// Key and type problems do not stop decoding, so they are reported
	// together with everything Validate and the file checks find.
	errs, err := config.LoadAll(path, &cfg)
	if err != nil {
		return cfg, err
	}
	errs = append(errs, cfg.resolveSources()...)
	errs = append(errs, cfg.Validate()...)
	errs = append(errs, cfg.checkFiles(time.Now())...)
	return cfg, config.Join(path, errs)
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func (c *Config) resolveSources() []error {
	factories, err := Components()
	if err != nil {
		return []error{err}
	}
	var errs []error
	for i := range c.Sources {
		e := &c.Sources[i]
		p := fmt.Sprintf("sources[%d]", i)
		f, ok := factories[e.Type]
		if !ok {
			types := make([]string, 0, len(factories))
			for t := range factories {
				types = append(types, t)
			}
			sort.Strings(types)
			errs = append(errs, fmt.Errorf("%s.type (line %d): %q is not a source type; want one of %s", p, e.line, e.Type, strings.Join(types, ", ")))
			continue
		}
		cfg := f.NewDefaultConfig()
		problems, err := config.DecodeNodeAll(p, e.node, cfg)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, problems...)
		e.Config = cfg
	}
	return errs
}

// Validate checks everything that needs no network or files.
func (c *Config) Validate() []error {
	var errs []error
	if err := pki.ValidateID(c.Agent.ID); err != nil {
		errs = append(errs, fmt.Errorf("agent.id: %v; it must equal the id in the agent's certificate", err))
	}
	if err := pki.ValidatePlant(c.Agent.Plant); err != nil {
		errs = append(errs, fmt.Errorf("agent.plant: %v", err))
	}
	if c.Agent.StateDir == "" {
		errs = append(errs, errors.New("agent.state_dir: required, e.g. /var/lib/plantsync-agent"))
	}
	errs = append(errs, c.Uplink.Validate("uplink")...)
	errs = append(errs, c.Buffer.Validate("buffer")...)
	if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
		errs = append(errs, fmt.Errorf("metrics.listen: %q is not host:port; want e.g. 127.0.0.1:9464", c.Metrics.Listen))
	}
	if !map[string]bool{"debug": true, "info": true, "warn": true, "error": true}[c.Log.Level] {
		errs = append(errs, fmt.Errorf("log.level: %q; want debug, info, warn or error", c.Log.Level))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format: %q; want text or json", c.Log.Format))
	}
	if len(c.Sources) == 0 {
		errs = append(errs, errors.New("sources: at least one source is required; add e.g. an mqtt source as in configs/agent.example.yaml"))
	}
	seen := map[string]int{}
	for i, e := range c.Sources {
		p := fmt.Sprintf("sources[%d]", i)
		if !nameRE.MatchString(e.Name) {
			errs = append(errs, fmt.Errorf("%s.name: %q; want lowercase letters, digits, - or _ (it labels metrics), e.g. mes", p, e.Name))
		}
		if j, dup := seen[e.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already used by sources[%d]; names must be unique", p, e.Name, j))
		}
		seen[e.Name] = i
		if e.Config != nil {
			errs = append(errs, e.Config.Validate(p)...)
		}
	}
	return errs
}

func (c *Config) checkFiles(now time.Time) []error {
	var errs []error
	for _, f := range [][2]string{{"uplink.tls.ca", c.Uplink.TLS.CA}, {"uplink.tls.cert", c.Uplink.TLS.Cert}} {
		field, path := f[0], f[1]
		if path == "" {
			continue
		}
		cert, err := pki.CheckCertFile(path, now)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %v", field, err))
		case field == "uplink.tls.ca" && !cert.IsCA:
			// Otherwise the agent would fail only when it connects.
			errs = append(errs, fmt.Errorf("%s: %s holds %q, not a CA certificate; use the ca.crt that `plantsync-hub pki issue-agent` wrote", field, path, cert.Subject.CommonName))
		}
	}
	if c.Uplink.TLS.Key != "" {
		if _, err := pki.CheckKeyFile(c.Uplink.TLS.Key); err != nil {
			errs = append(errs, fmt.Errorf("uplink.tls.key: %v", err))
		} else if cert, _ := pki.CheckCertFile(c.Uplink.TLS.Cert, now); cert != nil {
			// Only when the certificate could be read: a missing or
			// unparsable one is reported above already.
			if err := pki.CheckPair(c.Uplink.TLS.Cert, c.Uplink.TLS.Key); err != nil {
				errs = append(errs, fmt.Errorf("uplink.tls.key: %v", err))
			}
		}
	}
	if c.Uplink.TLS.Cert != "" {
		if cert, err := pki.CheckCertFile(c.Uplink.TLS.Cert, now); err == nil {
			if id, plant, err := pki.AgentIdentity(cert); err != nil {
				errs = append(errs, fmt.Errorf("uplink.tls.cert: %v", err))
			} else if (id != c.Agent.ID || plant != c.Agent.Plant) && pki.ValidateID(c.Agent.ID) == nil && pki.ValidatePlant(c.Agent.Plant) == nil {
				// An invalid agent.id or agent.plant is reported by Validate;
				// suggesting a certificate for it would not help.
				errs = append(errs, fmt.Errorf("uplink.tls.cert: certificate is for agent %q at plant %q, but agent.id/plant say %q/%q; fix agent.id and agent.plant or issue a certificate with `plantsync-hub pki issue-agent -id %s -plant %s`", id, plant, c.Agent.ID, c.Agent.Plant, c.Agent.ID, c.Agent.Plant))
			}
		}
	}
	return errs
}

// BufferPath is where the buffer file lives.
func (c *Config) BufferPath() string { return filepath.Join(c.Agent.StateDir, "buffer.db") }
