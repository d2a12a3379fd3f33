package mqtt

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/agent/source"
)

// Payload formats of a subscription (key data_format).
const (
	FormatJSON       = "json"
	FormatSparkplugB = "sparkplug_b"
	FormatText       = "text"
	FormatNumber     = "number"
)

// QoS is the MQTT quality of service of a subscription. Its zero value
// means the default, 1: at least once, acknowledged after the buffer
// commit. QoS0 asks for at most once (the broker does not redeliver, so a
// crash can lose messages).
type QoS int8

// QoS values.
const (
	QoSDefault QoS = 0
	QoS0       QoS = -1
	QoS1       QoS = 1
	QoS2       QoS = 2
	qosInvalid QoS = -128
)

// Level is the QoS byte sent to the broker.
func (q QoS) Level() byte {
	switch q {
	case QoS0:
		return 0
	case QoS2:
		return 2
	}
	return 1
}

// UnmarshalYAML reads qos: 0, 1 or 2; a key that is absent keeps the
// default. A value that is not a whole number is reported by the config
// loader with its line.
func (q *QoS) UnmarshalYAML(n *yaml.Node) error {
	var v int
	if err := n.Decode(&v); err != nil {
		return err
	}
	switch {
	case v == 0:
		*q = QoS0
	case v == 1 || v == 2:
		*q = QoS(v)
	case v > 2:
		*q = QoS(min(v, 127))
	default:
		*q = qosInvalid
	}
	return nil
}

// MarshalYAML writes the level, so a config round-trips.
func (q QoS) MarshalYAML() (any, error) { return int(q.Level()), nil }

// Subscription maps one topic filter to a canonical event type.
type Subscription struct {
	// Topic is an MQTT topic filter; a level written {name} matches like +
	// and captures that level, e.g. mes/{plant}/{line}/completion.
	Topic string `yaml:"topic"`
	QoS   QoS    `yaml:"qos"`
	// EventType is the canonical event type the messages become.
	EventType string `yaml:"event_type"`
	// IDField is the path into the payload of the message's own id, e.g.
	// message_id or header.msg_id. Preferred over ContentHash.
	IDField string `yaml:"id_field"`
	// ContentHash derives the id from a hash of topic and payload, kept in
	// a window of recent ids that is committed with the buffer: a
	// redelivery inside the window gets the same id. Two byte-identical
	// messages inside the window count as one.
	ContentHash bool `yaml:"content_hash"`
	// DataFormat is json (default), sparkplug_b, text or number.
	DataFormat string `yaml:"data_format"`
	// Fields maps canonical payload fields of EventType (and occurred_at,
	// correlation_id) to where their value comes from. Fields not listed
	// are read from payload keys of the same name, as the plain reader did.
	Fields map[string]Value `yaml:"fields"`
	// Attributes adds event attributes; topic captures are added anyway.
	Attributes map[string]Value `yaml:"attributes"`
	// DropIf is a CEL expression; when it is true the message is
	// acknowledged and counted as dropped, without an event.
	DropIf string `yaml:"drop_if"`
}

// Value says where one mapped field comes from: exactly one of Path,
// Const, Capture and CEL.
type Value struct {
	// Path into the JSON document: keys separated by dots, list elements
	// as [n], e.g. header.lines[0].qty. For text and number payloads the
	// payload is the document's key "value".
	Path string `yaml:"path"`
	// Const is a fixed value.
	Const string `yaml:"const"`
	// Capture is a named topic level ({name} in the topic filter).
	Capture string `yaml:"capture"`
	// CEL computes the value from doc, raw, topic and captures (see README).
	CEL string `yaml:"cel"`
	// Default is used when the path is absent or null.
	Default string `yaml:"default"`
	// Optional leaves the field empty when the path is absent or null,
	// instead of quarantining the message.
	Optional bool `yaml:"optional"`
	// Unit of a quantity field: a constant. UnitPath reads it from the
	// document instead.
	Unit     string `yaml:"unit"`
	UnitPath string `yaml:"unit_path"`
	// FromUnit converts the value from this unit into Unit exactly (e.g.
	// g to kg); both must be units of one dimension in the unit table.
	FromUnit string `yaml:"from_unit"`
	// Format of a time field: rfc3339 (default for text), unix, unix_ms,
	// or a Go layout such as "2006-01-02 15:04:05".
	Format string `yaml:"format"`
}

func (v Value) sources() int {
	n := 0
	for _, s := range []string{v.Path, v.Const, v.Capture, v.CEL} {
		if s != "" {
			n++
		}
	}
	return n
}

// TLSConfig secures the broker connection (ssl://, tls://, mqtts://, wss://).
type TLSConfig struct {
	// CA verifies the broker's certificate; empty uses the system roots.
	CA string `yaml:"ca"`
	// Cert and Key are the client certificate, for brokers that ask for one.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the broker's certificate.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns verification off; for a lab broker only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

func (t TLSConfig) enabled() bool {
	return t.CA != "" || t.Cert != "" || t.Key != "" || t.ServerName != "" || t.InsecureSkipVerify
}

// SparkplugConfig tunes Sparkplug B handling for subscriptions with
// data_format sparkplug_b.
type SparkplugConfig struct {
	// HostID, when set, makes the source a Sparkplug 3.0 primary host
	// application: it publishes spBv1.0/STATE/<host_id> online (retained,
	// with an offline will) once its subscriptions are in place.
	HostID string `yaml:"host_id"`
	// RequestRebirth publishes an NCMD "Node Control/Rebirth" when an alias
	// cannot be resolved or a sequence gap is seen (default true).
	RequestRebirth bool `yaml:"request_rebirth"`
	// RebirthInterval is the least time between two rebirth requests to
	// one edge node.
	RebirthInterval time.Duration `yaml:"rebirth_interval"`
}

// Config of a source of `type: mqtt`.
type Config struct {
	source.Common `yaml:",inline"`
	// Brokers are tried in order (failover), e.g. tcp://127.0.0.1:1883,
	// ssl://broker:8883, ws://broker:9001/mqtt.
	Brokers  []string `yaml:"brokers"`
	ClientID string   `yaml:"client_id"`
	// CleanSession off (default) keeps the broker session across
	// reconnects so unacknowledged messages are redelivered.
	CleanSession   bool          `yaml:"clean_session"`
	KeepAlive      time.Duration `yaml:"keep_alive"`
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// Username may be plain or a file:/env: reference; Password must be a
	// reference (file:/path or env:NAME), never inline.
	Username string    `yaml:"username"`
	Password string    `yaml:"password"`
	TLS      TLSConfig `yaml:"tls"`
	// ReconnectInitial and ReconnectMax bound the reconnect backoff (with
	// full jitter).
	ReconnectInitial time.Duration  `yaml:"reconnect_initial"`
	ReconnectMax     time.Duration  `yaml:"reconnect_max"`
	Subscriptions    []Subscription `yaml:"subscriptions"`
	// ContentHashWindow is how many recent content-hash ids are kept (and
	// committed with the buffer). It must cover every message that can be
	// committed but not yet acknowledged when the agent dies.
	ContentHashWindow int `yaml:"content_hash_window"`
	// QuarantineMaxEntries bounds the quarantine; beyond it the oldest
	// entries are deleted (counted and logged).
	QuarantineMaxEntries int `yaml:"quarantine_max_entries"`
	// MaxInflight bounds the messages received but not yet committed and
	// acknowledged. Beyond it the source stops reading from the broker, so
	// a backlog waits in the broker (its durable queue), not in agent
	// memory, and the ack latency stays that of a commit.
	MaxInflight int             `yaml:"max_inflight"`
	Sparkplug   SparkplugConfig `yaml:"sparkplug"`
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() *Config {
	return &Config{
		KeepAlive:            30 * time.Second,
		ConnectTimeout:       10 * time.Second,
		ReconnectInitial:     500 * time.Millisecond,
		ReconnectMax:         30 * time.Second,
		ContentHashWindow:    65536,
		QuarantineMaxEntries: 100000,
		MaxInflight:          512,
		Sparkplug:            SparkplugConfig{RequestRebirth: true, RebirthInterval: 5 * time.Second},
	}
}

var brokerSchemes = map[string]bool{"tcp": true, "mqtt": true, "ssl": true, "tls": true, "mqtts": true, "ws": true, "wss": true}

func secureScheme(s string) bool { return s == "ssl" || s == "tls" || s == "mqtts" || s == "wss" }

// Validate implements source.Config. It is pure: no network, no files
// (CEL expressions are compiled, so their errors show here).
func (c *Config) Validate(prefix string) []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Brokers) == 0 {
		add("%s.brokers: at least one broker URL is required, e.g. tcp://127.0.0.1:1883", prefix)
	}
	for i, b := range c.Brokers {
		u, err := url.Parse(b)
		if err != nil || u.Host == "" || !brokerSchemes[u.Scheme] {
			add("%s.brokers[%d]: %q is not a broker URL; want e.g. tcp://127.0.0.1:1883 (schemes tcp, ssl, ws, wss)", prefix, i, b)
		}
	}
	if c.ClientID == "" {
		add("%s.client_id: required and stable across restarts (the broker keeps the session under it), e.g. plantsync-%s", prefix, c.Name)
	}
	if c.KeepAlive < time.Second {
		add("%s.keep_alive: %s; want at least 1s, e.g. 30s", prefix, c.KeepAlive)
	}
	if c.ConnectTimeout <= 0 {
		add("%s.connect_timeout: must be positive, e.g. 10s", prefix)
	}
	if c.ReconnectInitial <= 0 || c.ReconnectMax < c.ReconnectInitial {
		add("%s.reconnect_initial/reconnect_max: want 0 < reconnect_initial <= reconnect_max, e.g. 500ms and 30s", prefix)
	}
	if c.Password != "" && !isSecretRef(c.Password) {
		add("%s.password: give it as file:/path/to/secret or env:VARIABLE, never inline in the config", prefix)
	}
	if c.Password != "" && c.Username == "" {
		add("%s.username: required when password is set", prefix)
	}
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		add("%s.tls: cert and key go together; give both or neither", prefix)
	}
	if c.ContentHashWindow < 16 || c.ContentHashWindow > 1<<22 {
		add("%s.content_hash_window: %d; want 16 to 4194304, e.g. 65536", prefix, c.ContentHashWindow)
	}
	if c.MaxInflight < 1 || c.MaxInflight > 65535 {
		add("%s.max_inflight: %d; want 1 to 65535, e.g. 512", prefix, c.MaxInflight)
	}
	if c.QuarantineMaxEntries < 1 {
		add("%s.quarantine_max_entries: %d; want at least 1, e.g. 100000", prefix, c.QuarantineMaxEntries)
	}
	if c.Sparkplug.HostID != "" && !validSparkplugID(c.Sparkplug.HostID) {
		add("%s.sparkplug.host_id: %q; want letters, digits, - or _ (it is a topic level), e.g. plantsync-%s", prefix, c.Sparkplug.HostID, c.Name)
	}
	if c.Sparkplug.RebirthInterval < 0 {
		add("%s.sparkplug.rebirth_interval: must not be negative, e.g. 5s", prefix)
	}
	if len(c.Subscriptions) == 0 {
		add("%s.subscriptions: at least one is required", prefix)
	}
	for i := range c.Subscriptions {
		_, serrs := compileSubscription(c.Subscriptions[i], fmt.Sprintf("%s.subscriptions[%d]", prefix, i))
		errs = append(errs, serrs...)
	}
	return errs
}

func isSecretRef(s string) bool {
	return strings.HasPrefix(s, "file:") || strings.HasPrefix(s, "env:")
}

func validSparkplugID(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func (s Subscription) format() string {
	if s.DataFormat == "" {
		return FormatJSON
	}
	return s.DataFormat
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
