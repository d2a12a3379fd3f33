package mqtt

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/internal/config"
)

type invalidCase struct {
	Name     string   `yaml:"name"`
	Config   string   `yaml:"config"`
	Problems int      `yaml:"problems"`
	Errors   []string `yaml:"errors"`
}

// decodeSource decodes one source entry strictly, as the agent does.
func decodeSource(t *testing.T, raw string) (*Config, []error) {
	t.Helper()
	cfg := NewDefaultConfig()
	problems, err := config.DecodeAll([]byte(raw), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, append(problems, cfg.Validate("sources[0]")...)
}

func TestValidateRejects(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "invalid_configs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []invalidCase
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			_, errs := decodeSource(t, c.Config)
			joined := errors.Join(errs...)
			if joined == nil {
				t.Fatal("config accepted")
			}
			for _, want := range c.Errors {
				if !strings.Contains(joined.Error(), want) {
					t.Errorf("errors lack %q; got:\n%v", want, joined)
				}
			}
			if want := max(c.Problems, 1); len(errs) != want {
				t.Errorf("%d problem(s), want %d:\n%v", len(errs), want, joined)
			}
		})
	}
}

// The keys of the walking skeleton keep working, and the QoS default is 1
// while an explicit 0 stays 0.
func TestConfigCompatibilityAndDefaults(t *testing.T) {
	cfg, errs := decodeSource(t, `
name: mes
type: mqtt
brokers: [tcp://127.0.0.1:1883]
client_id: plantsync-press-shop-1
clean_session: false
keep_alive: 20s
connect_timeout: 5s
subscriptions:
  - {topic: mes/+/+/completion, qos: 1, event_type: production.completion, id_field: message_id}
  - {topic: mes/+/+/consumption, event_type: material.consumption, id_field: message_id}
  - {topic: mes/+/+/shortage, qos: 0, event_type: material.shortage, id_field: message_id}
`)
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}
	if got := []byte{cfg.Subscriptions[0].QoS.Level(), cfg.Subscriptions[1].QoS.Level(), cfg.Subscriptions[2].QoS.Level()}; string(got) != string([]byte{1, 1, 0}) {
		t.Errorf("QoS levels %v, want [1 1 0] (default 1, explicit 0 kept)", got)
	}
	if cfg.KeepAlive.String() != "20s" || cfg.ConnectTimeout.String() != "5s" || cfg.CleanSession {
		t.Errorf("skeleton keys not decoded: %+v", cfg)
	}
	// The Go zero value means the default too (testkit builds configs so).
	if (Subscription{}).QoS.Level() != 1 {
		t.Error("zero QoS is not 1")
	}
	out, err := yaml.Marshal(cfg.Subscriptions[2])
	if err != nil || !strings.Contains(string(out), "qos: 0") {
		t.Errorf("QoS 0 does not round-trip: %s %v", out, err)
	}
}

func TestExampleConfigValidates(t *testing.T) {
	raw, err := os.ReadFile("sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Sources []yaml.Node `yaml:"sources"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Sources) == 0 {
		t.Fatal("sample.yaml has no sources")
	}
	t.Setenv("MQTT_PASSWORD", "secret")
	for i, n := range doc.Sources {
		cfg := NewDefaultConfig()
		problems, err := config.DecodeNodeAll("sources", &n, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if errs := append(problems, cfg.Validate("sources")...); len(errs) > 0 {
			t.Errorf("sample.yaml sources[%d]: %v", i, errors.Join(errs...))
		}
	}
}

func TestTopicPatterns(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		match         bool
		caps          map[string]string
	}{
		{"mes/{plant}/{line}/completion", "mes/DE-01/L1/completion", true, map[string]string{"plant": "DE-01", "line": "L1"}},
		{"mes/{plant}/{line}/completion", "mes/DE-01/L1/consumption", false, nil},
		{"mes/{plant}/{line}/completion", "mes/DE-01/completion", false, nil},
		{"mes/{plant}/#", "mes/DE-01/L1/x/y", true, map[string]string{"plant": "DE-01"}},
		{"mes/{plant}/#", "mes/DE-01", true, map[string]string{"plant": "DE-01"}},
		{"mes/+/+", "mes/a/b/c", false, nil},
		{"#", "$SYS/broker/load", false, nil},
		{"+/x", "$SYS/x", false, nil},
		{"spBv1.0/{group}/+/{edge}/#", "spBv1.0/G1/NDATA/E1", true, map[string]string{"group": "G1", "edge": "E1"}},
		{"a/{x}", "a/", true, map[string]string{"x": ""}},
	} {
		p, err := parseTopic(c.filter)
		if err != nil {
			t.Fatalf("%s: %v", c.filter, err)
		}
		caps, ok := p.match(c.topic)
		if ok != c.match {
			t.Errorf("%s ~ %s = %v, want %v", c.filter, c.topic, ok, c.match)
			continue
		}
		if ok && len(caps) != len(c.caps) {
			t.Errorf("%s ~ %s captured %v, want %v", c.filter, c.topic, caps, c.caps)
		}
		for k, v := range c.caps {
			if caps[k] != v {
				t.Errorf("%s ~ %s: %s = %q, want %q", c.filter, c.topic, k, caps[k], v)
			}
		}
	}
	if p, _ := parseTopic("mes/{plant}/{line}/completion"); p.filter != "mes/+/+/completion" {
		t.Errorf("filter %q", p.filter)
	}
}

func TestDecimals(t *testing.T) {
	for _, c := range []struct{ in, from, to, want string }{
		{"1250.5", "g", "kg", "1.2505"},
		{"0.1", "kg", "g", "100"},
		{"2.5", "lb", "kg", "1.133980925"},
		{"1", "kg", "lb", "2.204622622"}, // does not terminate: rounded to 9 digits
		{"3", "DZ", "EA", "36"},
		{"1e3", "mm", "m", "1"},
		{"-0.5", "h", "min", "-30"},
	} {
		got, err := convertUnit(c.in, c.from, c.to)
		if err != nil || got != c.want {
			t.Errorf("convert %s %s->%s = %q, %v; want %q", c.in, c.from, c.to, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "1,5", "1e", "1e999", "--1", ".5", "5.", "0x10", strings.Repeat("9", 80)} {
		if _, err := parseDecimal(bad); err == nil {
			t.Errorf("parseDecimal(%q) accepted", bad)
		}
	}
	if got, _ := decimalArith("sub", "0.3", "0.1"); got != "0.2" {
		t.Errorf("0.3-0.1 = %s", got)
	}
	if got, _ := normalizeDecimal("12.50"); got != "12.50" {
		t.Errorf("plain decimals are kept as written, got %s", got)
	}
}
