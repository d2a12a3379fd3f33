package partner

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/plantsync/plantsync/hub/schema"
)

// Config is one entry of the hub config key `partners`.
type Config struct {
	// Name appears in the URL (/api/v1/ingest/{name}), in the journal
	// producer ("partner:<name>"), in derived event ids and as a metric
	// label.
	Name string `yaml:"name"`
	// Types are the event types the partner may send, e.g.
	// supplier.confirmation.
	Types []string `yaml:"types"`
	// Plants are the plant codes its events may name; "*" allows any.
	Plants []string `yaml:"plants"`
	Auth   Auth     `yaml:"auth"`
	// MaxBatchEvents bounds the events of one request; 0 means the default.
	MaxBatchEvents int       `yaml:"max_batch_events"`
	RateLimit      RateLimit `yaml:"rate_limit"`
}

// Auth is how a partner proves who it is. At least one of TokenFile and
// ClientCert is set; when both are, both must match.
type Auth struct {
	// TokenFile holds the partner's bearer token, or "sha256:<hex>" of it
	// so the hub never stores the token itself.
	TokenFile string `yaml:"token_file"`
	// ClientCert is the name the partner's client certificate must carry,
	// as its subject common name or as a DNS, URI or e-mail SAN. The
	// certificate must chain to http.tls.client_ca.
	ClientCert string `yaml:"client_cert"`
	// HMACSecretFile, when set, holds the secret of the signature header
	// X-Plantsync-Signature: sha256=<hex HMAC-SHA256 of the raw body>.
	HMACSecretFile string `yaml:"hmac_secret_file"`
}

// RateLimit is a token bucket per partner, counted in requests. Zero fields
// mean the defaults.
type RateLimit struct {
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	Burst             int     `yaml:"burst"`
}

// Limits of the settings.
const (
	maxBatchEventsLimit = 10000
	maxRateLimit        = 10000
	maxBurst            = 100000
	// perEventBytes bounds the request body at this many bytes per allowed
	// event (a confirmation with hundreds of lines fits comfortably).
	perEventBytes = 64 << 10
	maxBodyBytes  = 64 << 20
)

// NewDefaultConfig is the one place the defaults of a partner entry are
// set; WithDefaults fills them into the fields a config left at zero.
func NewDefaultConfig() Config {
	return Config{
		MaxBatchEvents: 100,
		RateLimit:      RateLimit{RequestsPerSecond: 10, Burst: 20},
	}
}

// WithDefaults returns c with every field left at zero set to its default.
func (c Config) WithDefaults() Config {
	d := NewDefaultConfig()
	if c.MaxBatchEvents == 0 {
		c.MaxBatchEvents = d.MaxBatchEvents
	}
	if c.RateLimit.RequestsPerSecond == 0 {
		c.RateLimit.RequestsPerSecond = d.RateLimit.RequestsPerSecond
	}
	if c.RateLimit.Burst == 0 {
		c.RateLimit.Burst = d.RateLimit.Burst
	}
	return c
}

// MaxBodyBytes is the largest request body the partner may send.
func (c Config) MaxBodyBytes() int64 {
	return min(int64(max(c.WithDefaults().MaxBatchEvents, 1))*perEventBytes, maxBodyBytes)
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)

// Validate checks the `partners` entries without touching files or the
// network; prefix is their field path ("partners"). clientCA says whether
// the HTTP listener asks for client certificates (http.tls.client_ca).
func Validate(prefix string, partners []Config, clientCA bool) []error {
	reg := schema.New()
	var errs []error
	seen := map[string]int{}
	for i, raw := range partners {
		p := fmt.Sprintf("%s[%d]", prefix, i)
		c := raw.WithDefaults()
		if !nameRE.MatchString(c.Name) {
			errs = append(errs, fmt.Errorf("%s.name: %q; want lower-case letters, digits, _ or -, starting with a letter, e.g. acme-portal (it is part of the URL)", p, c.Name))
		} else if j, dup := seen[c.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name: %q is already declared at %s[%d]; use one entry per partner", p, c.Name, prefix, j))
		} else {
			seen[c.Name] = i
		}
		errs = append(errs, validateTypes(p, c.Types, reg)...)
		errs = append(errs, validatePlants(p, c.Plants)...)
		errs = append(errs, validateAuth(p, c.Auth, clientCA)...)
		if c.MaxBatchEvents < 1 || c.MaxBatchEvents > maxBatchEventsLimit {
			errs = append(errs, fmt.Errorf("%s.max_batch_events: %d out of range; want 1 to %d, e.g. 100", p, c.MaxBatchEvents, maxBatchEventsLimit))
		}
		if r := c.RateLimit.RequestsPerSecond; !(r > 0 && r <= maxRateLimit) {
			errs = append(errs, fmt.Errorf("%s.rate_limit.requests_per_second: %g out of range; want more than 0 and at most %d, e.g. 10", p, r, maxRateLimit))
		}
		if b := c.RateLimit.Burst; b < 1 || b > maxBurst {
			errs = append(errs, fmt.Errorf("%s.rate_limit.burst: %d out of range; want 1 to %d, e.g. 20", p, b, maxBurst))
		}
	}
	return errs
}

func validateTypes(p string, types []string, reg *schema.Registry) []error {
	if len(types) == 0 {
		return []error{fmt.Errorf("%s.types: required; list the event types the partner may send, e.g. [supplier.confirmation]", p)}
	}
	var errs []error
	for j, name := range types {
		t, ok := reg.Lookup(name)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s.types[%d]: %q is not an event type; want one of %s", p, j, name, partnerTypes(reg)))
		case t.Operational:
			errs = append(errs, fmt.Errorf("%s.types[%d]: %q reports on plantsync itself and comes only from agents; remove it", p, j, name))
		case slices.Index(types, name) != j:
			errs = append(errs, fmt.Errorf("%s.types[%d]: %q is listed twice; keep one", p, j, name))
		}
	}
	return errs
}

func partnerTypes(reg *schema.Registry) string {
	var names []string
	for _, t := range reg.Types() {
		if !t.Operational {
			names = append(names, t.Name)
		}
	}
	return strings.Join(names, ", ")
}

func validatePlants(p string, plants []string) []error {
	if len(plants) == 0 {
		return []error{fmt.Errorf(`%s.plants: required; list the plant codes the partner may send for, e.g. [DE-01], or ["*"] for any`, p)}
	}
	var errs []error
	for j, plant := range plants {
		switch {
		case strings.TrimSpace(plant) == "" || strings.ContainsAny(plant, " \t\r\n"):
			errs = append(errs, fmt.Errorf("%s.plants[%d]: %q; want a plant code without white space, e.g. DE-01", p, j, plant))
		case plant == "*" && len(plants) > 1:
			errs = append(errs, fmt.Errorf(`%s.plants[%d]: "*" allows any plant; remove the other entries or the "*"`, p, j))
		case slices.Index(plants, plant) != j:
			errs = append(errs, fmt.Errorf("%s.plants[%d]: %q is listed twice; keep one", p, j, plant))
		}
	}
	return errs
}

func validateAuth(p string, a Auth, clientCA bool) []error {
	var errs []error
	if a.TokenFile == "" && a.ClientCert == "" {
		errs = append(errs, fmt.Errorf("%s.auth: set token_file (a bearer token), client_cert (the name in the partner's client certificate), or both", p))
	}
	if a.ClientCert != "" {
		if strings.TrimSpace(a.ClientCert) != a.ClientCert {
			errs = append(errs, fmt.Errorf("%s.auth.client_cert: %q has surrounding white space; remove it", p, a.ClientCert))
		}
		if !clientCA {
			errs = append(errs, fmt.Errorf("%s.auth.client_cert: the HTTP listener does not ask for client certificates; set http.tls.cert, http.tls.key and http.tls.client_ca", p))
		}
	}
	return errs
}

// CheckFiles reads the token and HMAC secret files of the `partners`
// entries and reports what cannot be used; no secret appears in an error.
func CheckFiles(prefix string, partners []Config) []error {
	var errs []error
	for i, c := range partners {
		p := fmt.Sprintf("%s[%d].auth", prefix, i)
		if c.Auth.TokenFile != "" {
			if _, err := readTokenFile(c.Auth.TokenFile); err != nil {
				errs = append(errs, fmt.Errorf("%s.token_file: %v", p, err))
			}
		}
		if c.Auth.HMACSecretFile != "" {
			if _, err := readHMACFile(c.Auth.HMACSecretFile); err != nil {
				errs = append(errs, fmt.Errorf("%s.hmac_secret_file: %v", p, err))
			}
		}
	}
	return errs
}
