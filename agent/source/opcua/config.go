package opcua

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/plantsync/plantsync/agent/source"
)

// Security policies and modes a config may name. "auto" picks the strongest
// pair the server offers (see selectEndpoint).
const (
	PolicyAuto                = "auto"
	PolicyNone                = "None"
	PolicyBasic256Sha256      = "Basic256Sha256"
	PolicyAes128Sha256RsaOaep = "Aes128_Sha256_RsaOaep"
	PolicyAes256Sha256RsaPss  = "Aes256_Sha256_RsaPss"

	ModeAuto           = "auto"
	ModeNone           = "None"
	ModeSign           = "Sign"
	ModeSignAndEncrypt = "SignAndEncrypt"
)

// Authentication types.
const (
	AuthAnonymous   = "anonymous"
	AuthUsername    = "username"
	AuthCertificate = "certificate"
)

// Back-fill settings of a node.
const (
	BackfillAuto = "auto" // when the server says the node is historized
	BackfillOn   = "on"
	BackfillOff  = "off"
)

// Deadband types.
const (
	DeadbandAbsolute = "absolute"
	DeadbandPercent  = "percent"
)

// Config of a source of `type: opcua`. Defaults are set in NewDefaultConfig
// only; README.md documents every key.
type Config struct {
	source.Common `yaml:",inline"`
	// Endpoint is the server's URL, e.g. opc.tcp://10.1.2.3:4840.
	Endpoint     string             `yaml:"endpoint"`
	Security     SecurityConfig     `yaml:"security"`
	Auth         AuthConfig         `yaml:"auth"`
	Certificate  CertificateConfig  `yaml:"certificate"`
	Trust        TrustConfig        `yaml:"trust"`
	Session      SessionConfig      `yaml:"session"`
	Reconnect    ReconnectConfig    `yaml:"reconnect"`
	Subscription SubscriptionConfig `yaml:"subscription"`
	// Nodes are subscribed to explicitly.
	Nodes []NodeConfig `yaml:"nodes"`
	// Browse rules find nodes by path; BrowseInterval re-expands them.
	Browse         []BrowseRule  `yaml:"browse"`
	BrowseInterval time.Duration `yaml:"browse_interval"`
	// Events subscribes to event notifiers (alarms and conditions).
	Events  []EventConfig `yaml:"events"`
	History HistoryConfig `yaml:"history"`
	// RetryBadItems is how often items the server refused (e.g.
	// BadNodeIdUnknown) are tried again.
	RetryBadItems time.Duration `yaml:"retry_bad_items"`
	// MaxPending bounds values waiting for the buffer; beyond it the oldest
	// are dropped and counted (errors_total{kind="overflow"}).
	MaxPending int `yaml:"max_pending"`
}

// SecurityConfig selects the secure channel.
type SecurityConfig struct {
	Policy string `yaml:"policy"`
	Mode   string `yaml:"mode"`
}

// AuthConfig is the user identity of the session. Passwords come from a
// file or an environment variable, never from the YAML.
type AuthConfig struct {
	Type         string `yaml:"type"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	PasswordEnv  string `yaml:"password_env"`
	// CertFile and KeyFile are the X.509 user certificate (type certificate).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// CertificateConfig is the client's application instance certificate.
// Empty paths mean: generate one on first start into the source's state
// folder (pki/own) and keep it.
type CertificateConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ApplicationURI of a generated certificate; default
	// urn:plantsync:agent:<agent id>:<source name>.
	ApplicationURI string `yaml:"application_uri"`
}

// TrustConfig says which server certificates are trusted. A certificate is
// trusted when its SHA-256 fingerprint is listed or when it lies in Dir
// (DER or PEM; `plantsync-agent opcua trust` writes there).
type TrustConfig struct {
	Dir          string   `yaml:"dir"`
	Fingerprints []string `yaml:"fingerprints"`
}

// SessionConfig tunes the session.
type SessionConfig struct {
	Timeout        time.Duration `yaml:"timeout"`
	RequestTimeout time.Duration `yaml:"request_timeout"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// KeepaliveInterval is how often the server is read to detect a dead
	// or hung session.
	KeepaliveInterval time.Duration `yaml:"keepalive_interval"`
}

// ReconnectConfig bounds reconnect attempts.
type ReconnectConfig struct {
	Initial time.Duration `yaml:"initial"`
	Max     time.Duration `yaml:"max"`
	// RefusedInterval is the least time between attempts after the server
	// refused a connect or a session (BadTooManySessions, untrusted
	// certificate, connection refused), so a full PLC is not stormed.
	RefusedInterval time.Duration `yaml:"refused_interval"`
}

// SubscriptionConfig shapes subscriptions and holds the item defaults.
type SubscriptionConfig struct {
	PublishingInterval      time.Duration `yaml:"publishing_interval"`
	MaxItemsPerSubscription int           `yaml:"max_items_per_subscription"`
	MaxItemsPerCall         int           `yaml:"max_items_per_call"`
	SamplingInterval        time.Duration `yaml:"sampling_interval"`
	QueueSize               uint32        `yaml:"queue_size"`
}

// Mapping turns a node's values into canonical events.
type Mapping struct {
	// EventType is a canonical type: observation (default), machine.state,
	// machine.alarm, production.completion, ...
	EventType string `yaml:"event_type"`
	// Fields sets payload fields from templates: literal text with
	// {value}, {raw}, {node_id}, {browse_name}, {path}, {status},
	// {source_timestamp}, {server_timestamp} and browse captures {1}..{9}.
	// Nested fields use dots: good.unit.
	Fields map[string]string `yaml:"fields"`
	// ValueMap translates raw values (as text) before they fill {value},
	// e.g. {"1": running, "2": stopped}.
	ValueMap map[string]string `yaml:"value_map"`
}

// ItemOptions are the monitoring parameters of a node.
type ItemOptions struct {
	SamplingInterval time.Duration `yaml:"sampling_interval"`
	QueueSize        uint32        `yaml:"queue_size"`
	Deadband         Deadband      `yaml:"deadband"`
	// Backfill reads values missed while disconnected with HistoryRead:
	// auto (when the node is historized), on or off.
	Backfill string `yaml:"backfill"`
}

// Deadband suppresses small changes, on the server (DataChangeFilter) and
// again in the agent for servers that ignore it.
type Deadband struct {
	Type  string  `yaml:"type"`
	Value float64 `yaml:"value"`
}

// NodeConfig is one explicitly subscribed node.
type NodeConfig struct {
	NodeID      string `yaml:"node_id"`
	Mapping     `yaml:",inline"`
	ItemOptions `yaml:",inline"`
}

// BrowseRule subscribes to every variable whose browse path under Start
// matches Path. Segments are browse names; * and ? match within one
// segment, ** matches any number of segments. Each segment with a wildcard
// is a capture: {1}, {2}, ... in field templates.
type BrowseRule struct {
	// Start is the node the path begins at; default the Root folder (i=84),
	// so paths read Objects/Line1/*/State.
	Start       string `yaml:"start"`
	Path        string `yaml:"path"`
	Mapping     `yaml:",inline"`
	ItemOptions `yaml:",inline"`
	// MaxNodes bounds what one rule may subscribe to.
	MaxNodes int `yaml:"max_nodes"`
}

// EventConfig subscribes to the events of a notifier and maps them, by
// default to machine.alarm.
type EventConfig struct {
	// Notifier is the node whose events are subscribed; default the Server
	// object (i=2253).
	Notifier string `yaml:"notifier"`
	// EventType defaults to machine.alarm; fields may use the selected
	// event fields as {SourceName}, {Message}, {Severity}, {ConditionName},
	// {ActiveState}, {AckedState}, {ConditionId}, {EventType}, {Time},
	// {EventId} and the extra Select paths.
	EventType string            `yaml:"event_type"`
	Fields    map[string]string `yaml:"fields"`
	// Select adds event fields by browse path relative to BaseEventType,
	// e.g. "Machine/Code".
	Select    []string `yaml:"select"`
	QueueSize uint32   `yaml:"queue_size"`
}

// HistoryConfig bounds the gap back-fill.
type HistoryConfig struct {
	// MaxAge is how far back a gap is read; older values are not fetched.
	MaxAge           time.Duration `yaml:"max_age"`
	MaxValuesPerNode int           `yaml:"max_values_per_node"`
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() *Config {
	return &Config{
		Security: SecurityConfig{Policy: PolicyAuto, Mode: ModeAuto},
		Auth:     AuthConfig{Type: AuthAnonymous},
		Session: SessionConfig{
			Timeout:           60 * time.Second,
			RequestTimeout:    10 * time.Second,
			ConnectTimeout:    10 * time.Second,
			KeepaliveInterval: 5 * time.Second,
		},
		Reconnect: ReconnectConfig{Initial: time.Second, Max: time.Minute, RefusedInterval: 15 * time.Second},
		Subscription: SubscriptionConfig{
			PublishingInterval:      time.Second,
			MaxItemsPerSubscription: 5000,
			MaxItemsPerCall:         500,
			SamplingInterval:        time.Second,
			QueueSize:               10,
		},
		BrowseInterval: 5 * time.Minute,
		History:        HistoryConfig{MaxAge: time.Hour, MaxValuesPerNode: 10000},
		RetryBadItems:  30 * time.Second,
		MaxPending:     200000,
	}
}

// Validate implements source.Config. It is pure: no network, no files.
func (c *Config) Validate(prefix string) []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if err := checkEndpoint(c.Endpoint); err != nil {
		add("%s.endpoint: %v", prefix, err)
	}

	policies := []string{PolicyAuto, PolicyNone, PolicyBasic256Sha256, PolicyAes128Sha256RsaOaep, PolicyAes256Sha256RsaPss}
	if !slices.Contains(policies, c.Security.Policy) {
		add("%s.security.policy: %q is not a policy; want one of %s", prefix, c.Security.Policy, strings.Join(policies, ", "))
	}
	modes := []string{ModeAuto, ModeNone, ModeSign, ModeSignAndEncrypt}
	if !slices.Contains(modes, c.Security.Mode) {
		add("%s.security.mode: %q is not a mode; want one of %s", prefix, c.Security.Mode, strings.Join(modes, ", "))
	}
	if c.Security.Policy == PolicyNone && (c.Security.Mode == ModeSign || c.Security.Mode == ModeSignAndEncrypt) {
		add("%s.security.mode: %s needs a security policy, not None; set security.policy to Basic256Sha256 or auto", prefix, c.Security.Mode)
	}
	if c.Security.Mode == ModeNone && c.Security.Policy != PolicyNone && c.Security.Policy != PolicyAuto {
		add("%s.security.policy: %s needs mode Sign or SignAndEncrypt, not None; set security.mode to SignAndEncrypt or auto", prefix, c.Security.Policy)
	}

	switch c.Auth.Type {
	case AuthAnonymous:
	case AuthUsername:
		if c.Auth.Username == "" {
			add("%s.auth.username: required with auth.type username", prefix)
		}
		if (c.Auth.PasswordFile == "") == (c.Auth.PasswordEnv == "") {
			add("%s.auth: set exactly one of password_file or password_env (the password never sits in the YAML)", prefix)
		}
	case AuthCertificate:
		if c.Auth.CertFile == "" || c.Auth.KeyFile == "" {
			add("%s.auth: cert_file and key_file are required with auth.type certificate (the X.509 user certificate and its RSA key)", prefix)
		}
	default:
		add("%s.auth.type: %q; want anonymous, username or certificate", prefix, c.Auth.Type)
	}
	if (c.Certificate.CertFile == "") != (c.Certificate.KeyFile == "") {
		add("%s.certificate: set both cert_file and key_file, or neither to generate a certificate into the state folder", prefix)
	}
	if u := c.Certificate.ApplicationURI; u != "" {
		if pu, err := url.Parse(u); err != nil || pu.Scheme == "" {
			add("%s.certificate.application_uri: %q is not a URI; want e.g. urn:plantsync:agent:press-1:line1", prefix, u)
		}
	}
	for i, fp := range c.Trust.Fingerprints {
		if _, err := parseFingerprint(fp); err != nil {
			add("%s.trust.fingerprints[%d]: %v", prefix, i, err)
		}
	}

	positive := func(field string, d time.Duration, example string) {
		if d <= 0 {
			add("%s.%s: must be positive, e.g. %s", prefix, field, example)
		}
	}
	positive("session.timeout", c.Session.Timeout, "60s")
	positive("session.request_timeout", c.Session.RequestTimeout, "10s")
	positive("session.connect_timeout", c.Session.ConnectTimeout, "10s")
	positive("session.keepalive_interval", c.Session.KeepaliveInterval, "5s")
	positive("reconnect.initial", c.Reconnect.Initial, "1s")
	positive("reconnect.refused_interval", c.Reconnect.RefusedInterval, "15s")
	if c.Reconnect.Max < c.Reconnect.Initial {
		add("%s.reconnect.max: %s is less than reconnect.initial %s; want at least that, e.g. 1m", prefix, c.Reconnect.Max, c.Reconnect.Initial)
	}
	if c.Subscription.PublishingInterval < 50*time.Millisecond {
		add("%s.subscription.publishing_interval: %s; want at least 50ms, e.g. 1s", prefix, c.Subscription.PublishingInterval)
	}
	if c.Subscription.MaxItemsPerCall < 1 || c.Subscription.MaxItemsPerCall > 500 {
		add("%s.subscription.max_items_per_call: %d; want 1 to 500", prefix, c.Subscription.MaxItemsPerCall)
	}
	if c.Subscription.MaxItemsPerSubscription < 1 || c.Subscription.MaxItemsPerSubscription > 100000 {
		add("%s.subscription.max_items_per_subscription: %d; want 1 to 100000, e.g. 5000", prefix, c.Subscription.MaxItemsPerSubscription)
	}
	if c.Subscription.SamplingInterval < 0 {
		add("%s.subscription.sampling_interval: must not be negative", prefix)
	}
	if c.BrowseInterval < 100*time.Millisecond {
		add("%s.browse_interval: %s; want at least 100ms, e.g. 5m", prefix, c.BrowseInterval)
	}
	positive("retry_bad_items", c.RetryBadItems, "30s")
	positive("history.max_age", c.History.MaxAge, "1h")
	if c.History.MaxValuesPerNode < 1 {
		add("%s.history.max_values_per_node: %d; want at least 1, e.g. 10000", prefix, c.History.MaxValuesPerNode)
	}
	if c.MaxPending < 1000 {
		add("%s.max_pending: %d; want at least 1000, e.g. 200000", prefix, c.MaxPending)
	}

	if len(c.Nodes) == 0 && len(c.Browse) == 0 && len(c.Events) == 0 {
		add("%s: nothing to subscribe to; want nodes, browse rules or events, e.g. nodes: [{node_id: ns=2;s=Press3.State}] (see agent/source/opcua/README.md)", prefix)
	}
	seen := map[string]int{}
	for i, n := range c.Nodes {
		p := fmt.Sprintf("%s.nodes[%d]", prefix, i)
		if _, err := parseNodeRef(n.NodeID); err != nil {
			add("%s.node_id: %v", p, err)
		} else if j, dup := seen[n.NodeID]; dup {
			add("%s.node_id: %q is already listed at nodes[%d]; remove one of them", p, n.NodeID, j)
		} else {
			seen[n.NodeID] = i
		}
		errs = append(errs, validateMapping(p, n.Mapping, 0)...)
		errs = append(errs, validateItemOptions(p, n.ItemOptions)...)
	}
	for i, r := range c.Browse {
		p := fmt.Sprintf("%s.browse[%d]", prefix, i)
		if r.Start != "" {
			if _, err := parseNodeRef(r.Start); err != nil {
				add("%s.start: %v", p, err)
			}
		}
		segs, err := parsePattern(r.Path)
		if err != nil {
			add("%s.path: %v", p, err)
		}
		errs = append(errs, validateMapping(p, r.Mapping, captures(segs))...)
		errs = append(errs, validateItemOptions(p, r.ItemOptions)...)
		if r.MaxNodes < 0 {
			add("%s.max_nodes: must not be negative (0 means 10000)", p)
		}
	}
	for i, e := range c.Events {
		p := fmt.Sprintf("%s.events[%d]", prefix, i)
		if e.Notifier != "" {
			if _, err := parseNodeRef(e.Notifier); err != nil {
				add("%s.notifier: %v", p, err)
			}
		}
		for j, s := range e.Select {
			if strings.TrimSpace(s) == "" || strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//") {
				add("%s.select[%d]: %q is not a browse path; want e.g. Machine/Code", p, j, s)
			}
		}
		et := e.EventType
		if et == "" {
			et = "machine.alarm"
		}
		if _, err := compileEventMapping(et, e.Fields, e.Select); err != nil {
			errs = append(errs, prefixErrors(p, err)...)
		}
	}
	return errs
}

func validateMapping(p string, m Mapping, ncaptures int) []error {
	et := m.EventType
	if et == "" {
		et = "observation"
	}
	if _, err := compileMapping(et, m.Fields, m.ValueMap, ncaptures); err != nil {
		return prefixErrors(p, err)
	}
	return nil
}

func validateItemOptions(p string, o ItemOptions) []error {
	var errs []error
	if o.SamplingInterval < 0 {
		errs = append(errs, fmt.Errorf("%s.sampling_interval: must not be negative; 0 uses subscription.sampling_interval", p))
	}
	switch o.Deadband.Type {
	case "":
		if o.Deadband.Value != 0 {
			errs = append(errs, fmt.Errorf("%s.deadband.type: required with deadband.value; want absolute or percent", p))
		}
	case DeadbandAbsolute:
		if o.Deadband.Value <= 0 {
			errs = append(errs, fmt.Errorf("%s.deadband.value: %v; want a positive change in the value's unit, e.g. 0.5", p, o.Deadband.Value))
		}
	case DeadbandPercent:
		if o.Deadband.Value <= 0 || o.Deadband.Value > 100 {
			errs = append(errs, fmt.Errorf("%s.deadband.value: %v; want a percent of the node's EURange, 0 < value <= 100", p, o.Deadband.Value))
		}
	default:
		errs = append(errs, fmt.Errorf("%s.deadband.type: %q; want absolute or percent", p, o.Deadband.Type))
	}
	switch o.Backfill {
	case "", BackfillAuto, BackfillOn, BackfillOff:
	default:
		errs = append(errs, fmt.Errorf("%s.backfill: %q; want auto, on or off", p, o.Backfill))
	}
	return errs
}

// fieldErrors carries several problems of one mapping.
type fieldErrors []error

func (f fieldErrors) Error() string {
	parts := make([]string, len(f))
	for i, e := range f {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

func prefixErrors(p string, err error) []error {
	var list []error
	if fe, ok := err.(fieldErrors); ok {
		list = fe
	} else {
		list = []error{err}
	}
	out := make([]error, len(list))
	for i, e := range list {
		out[i] = fmt.Errorf("%s.%w", p, e)
	}
	return out
}

func checkEndpoint(s string) error {
	if s == "" {
		return fmt.Errorf("required, e.g. opc.tcp://192.168.10.20:4840")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "opc.tcp" || u.Host == "" {
		return fmt.Errorf("%q is not an OPC UA endpoint; want opc.tcp://host:port, e.g. opc.tcp://192.168.10.20:4840", s)
	}
	if _, port, err := net.SplitHostPort(u.Host); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has no valid port; want e.g. opc.tcp://192.168.10.20:4840", s)
		}
	}
	return nil
}

// parseFingerprint accepts a SHA-256 fingerprint as 64 hex digits, with or
// without colons and an optional "sha256:" prefix.
func parseFingerprint(s string) ([32]byte, error) {
	var out [32]byte
	t := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:")
	t = strings.ReplaceAll(t, ":", "")
	b, err := hex.DecodeString(t)
	if err != nil || len(b) != 32 {
		return out, fmt.Errorf("%q is not a SHA-256 fingerprint; want 64 hex digits as printed by `plantsync-agent opcua trust`", s)
	}
	copy(out[:], b)
	return out, nil
}

// segment is one step of a browse path pattern.
type segment struct {
	glob     string
	anyDepth bool // **
	capture  bool
}

func parsePattern(p string) ([]segment, error) {
	p = strings.Trim(strings.TrimSpace(p), "/")
	if p == "" {
		return nil, fmt.Errorf("required: a browse path such as Objects/Line1/*/State")
	}
	parts := strings.Split(p, "/")
	segs := make([]segment, 0, len(parts))
	for _, s := range parts {
		if s == "" {
			return nil, fmt.Errorf("%q has an empty segment; want e.g. Objects/Line1/*/State", p)
		}
		if s == "**" {
			segs = append(segs, segment{anyDepth: true})
			continue
		}
		if strings.Contains(s, "**") {
			return nil, fmt.Errorf("%q: ** must be a whole segment", p)
		}
		if _, err := path.Match(s, ""); err != nil {
			return nil, fmt.Errorf("%q: segment %q is not a valid pattern (%v); want names with * ? or [a-z]", p, s, err)
		}
		segs = append(segs, segment{glob: s, capture: strings.ContainsAny(s, "*?[")})
	}
	if segs[len(segs)-1].anyDepth {
		return nil, fmt.Errorf("%q must end in a variable name pattern, not **", p)
	}
	return segs, nil
}

func captures(segs []segment) int {
	n := 0
	for _, s := range segs {
		if s.capture || s.anyDepth {
			n++
		}
	}
	return n
}
