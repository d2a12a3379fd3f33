package opcua

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/internal/config"
)

type invalidCase struct {
	Name   string   `yaml:"name"`
	Config string   `yaml:"config"`
	Errors []string `yaml:"errors"`
}

var (
	problemHead = regexp.MustCompile(`^[a-z_]+(\[\d+\])?(\.[a-z_0-9]+(\[\d+\])?)*( \(line \d+\))?: `)
	fixWords    = []string{"want", "e.g.", "use ", "run ", "set ", "remove", "required", "must", "name one"}
)

// decodeEntry decodes one sources entry strictly and validates it, the
// way the agent's LoadConfig does.
func decodeEntry(t *testing.T, prefix, raw string) (*Config, []error) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(raw), &n); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	cfg := NewDefaultConfig()
	problems, err := config.DecodeNodeAll(prefix, n.Content[0], cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, append(problems, cfg.Validate(prefix)...)
}

func TestConfigRejectsInvalid(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "invalid_configs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []invalidCase
	if err := yaml.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			_, errs := decodeEntry(t, "sources[0]", c.Config)
			if len(errs) == 0 {
				t.Fatal("config accepted")
			}
			all := errors.Join(errs...).Error()
			for _, want := range c.Errors {
				if !strings.Contains(all, want) {
					t.Errorf("errors lack %q; got:\n%s", want, all)
				}
			}
			for _, e := range errs {
				p := e.Error()
				if !problemHead.MatchString(p) {
					t.Errorf("problem does not start with its field path: %q", p)
				}
				fix := false
				for _, w := range fixWords {
					fix = fix || strings.Contains(p, w)
				}
				if !fix {
					t.Errorf("problem does not say how to fix it: %q", p)
				}
			}
		})
	}
}

// The sample config in this folder is valid and compiles.
func TestExampleConfigIsValid(t *testing.T) {
	raw, err := os.ReadFile("opcua.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var list []yaml.Node
	if err := yaml.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("example holds %d entries", len(list))
	}
	out, err := yaml.Marshal(&list[0])
	if err != nil {
		t.Fatal(err)
	}
	cfg, errs := decodeEntry(t, "sources[0]", string(out))
	if len(errs) > 0 {
		t.Fatalf("example config: %v", errors.Join(errs...))
	}
	if cfg.Endpoint == "" || len(cfg.Nodes) != 2 || len(cfg.Browse) != 1 || len(cfg.Events) != 1 || cfg.Auth.Type != AuthUsername {
		t.Fatalf("example not decoded fully: %+v", cfg)
	}
	if _, err := New(cfg, sourceEnvForTest()); err != nil {
		t.Fatalf("New: %v", err)
	}
}

func TestConfigDefaultsAreValidWithOneNode(t *testing.T) {
	cfg := NewDefaultConfig()
	cfg.Endpoint = "opc.tcp://127.0.0.1:4840"
	cfg.Nodes = []NodeConfig{{NodeID: "nsu=urn:x:y;s=A"}}
	if errs := cfg.Validate("s"); len(errs) > 0 {
		t.Fatal(errs)
	}
}

func TestParseFingerprintForms(t *testing.T) {
	want := strings.Repeat("ab", 32)
	for _, in := range []string{want, strings.ToUpper(want), "sha256:" + want, strings.TrimSuffix(strings.Repeat("AB:", 32), ":")} {
		fp, err := parseFingerprint(in)
		if err != nil || fmt.Sprintf("%x", fp) != want {
			t.Errorf("parseFingerprint(%q) = %x, %v", in, fp, err)
		}
	}
}
