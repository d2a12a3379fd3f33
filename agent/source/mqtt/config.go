package mqtt

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/plantsync/plantsync/agent/source"
)

// Subscription maps one topic filter to a canonical event type.
type Subscription struct {
	Topic     string `yaml:"topic"`
	QoS       byte   `yaml:"qos"`
	EventType string `yaml:"event_type"`
	// IDField is the top-level JSON key holding the message's own id.
	IDField string `yaml:"id_field"`
}

// Config of a source of `type: mqtt`.
type Config struct {
	source.Common `yaml:",inline"`
	// Brokers are tried in order (failover), e.g. tcp://127.0.0.1:1883.
	Brokers  []string `yaml:"brokers"`
	ClientID string   `yaml:"client_id"`
	// CleanSession off (default) keeps the broker session across
	// reconnects so unacknowledged messages are redelivered.
	CleanSession   bool           `yaml:"clean_session"`
	KeepAlive      time.Duration  `yaml:"keep_alive"`
	ConnectTimeout time.Duration  `yaml:"connect_timeout"`
	Subscriptions  []Subscription `yaml:"subscriptions"`
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() *Config {
	return &Config{KeepAlive: 30 * time.Second, ConnectTimeout: 10 * time.Second}
}

// Validate implements source.Config.
func (c *Config) Validate(prefix string) []error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, fmt.Errorf("%s.brokers: at least one broker URL is required, e.g. tcp://127.0.0.1:1883", prefix))
	}
	for i, b := range c.Brokers {
		u, err := url.Parse(b)
		if err != nil || u.Host == "" || !map[string]bool{"tcp": true, "ssl": true, "tls": true, "ws": true, "wss": true, "mqtt": true, "mqtts": true}[u.Scheme] {
			errs = append(errs, fmt.Errorf("%s.brokers[%d]: %q is not a broker URL; want e.g. tcp://127.0.0.1:1883", prefix, i, b))
		}
	}
	if c.ClientID == "" {
		errs = append(errs, fmt.Errorf("%s.client_id: required and stable across restarts (the broker keeps the session under it), e.g. plantsync-%s", prefix, c.Name))
	}
	if len(c.Subscriptions) == 0 {
		errs = append(errs, fmt.Errorf("%s.subscriptions: at least one is required", prefix))
	}
	for i, s := range c.Subscriptions {
		p := fmt.Sprintf("%s.subscriptions[%d]", prefix, i)
		if s.Topic == "" || strings.Contains(s.Topic, "#") && !strings.HasSuffix(s.Topic, "#") {
			errs = append(errs, fmt.Errorf("%s.topic: %q is not a topic filter; want e.g. mes/+/+/completion", p, s.Topic))
		}
		if s.QoS > 2 {
			errs = append(errs, fmt.Errorf("%s.qos: %d; want 0, 1 or 2 (1 recommended: acked after the buffer commit)", p, s.QoS))
		}
		if _, ok := mappers[s.EventType]; !ok {
			errs = append(errs, fmt.Errorf("%s.event_type: %q is not supported by the MQTT JSON reader; want one of %s", p, s.EventType, strings.Join(supportedTypes(), ", ")))
		}
		if s.IDField == "" {
			errs = append(errs, fmt.Errorf("%s.id_field: required: the JSON key holding the message's own id, e.g. message_id", p))
		}
	}
	if c.KeepAlive < time.Second {
		errs = append(errs, fmt.Errorf("%s.keep_alive: %s; want at least 1s, e.g. 30s", prefix, c.KeepAlive))
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("%s.connect_timeout: must be positive, e.g. 10s", prefix))
	}
	return errs
}
