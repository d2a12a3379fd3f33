package testkit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/internal/config"
)

// InvalidConfig is one entry of a component's testdata/invalid_configs.yaml:
// a config and the problems its validation must report.
type InvalidConfig struct {
	Name   string `yaml:"name"`
	Config string `yaml:"config"`
	// Problems is how many problems the error lists; 0 means 1.
	Problems int      `yaml:"problems"`
	Errors   []string `yaml:"errors"`
}

// ReadInvalidConfigs loads testdata/invalid_configs.yaml of the package
// under test, strictly, and fails on an empty file.
func ReadInvalidConfigs(t testing.TB) []InvalidConfig {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "invalid_configs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []InvalidConfig
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&cases); err != nil {
		t.Fatalf("testdata/invalid_configs.yaml: %v", err)
	}
	if len(cases) == 0 {
		t.Fatal("testdata/invalid_configs.yaml holds no cases")
	}
	return cases
}

// ConfigProblems splits a LoadConfig error into the problems it lists.
func ConfigProblems(err error) []string {
	_, list, ok := strings.Cut(err.Error(), "\n  - ")
	if !ok {
		return nil
	}
	return strings.Split(list, "\n  - ")
}

// YAMLScalarAt finds the scalar at a path of mapping keys, or nil.
func YAMLScalarAt(doc *yaml.Node, keys ...string) *yaml.Node {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, k := range keys {
		var next *yaml.Node
		for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	if n.Kind != yaml.ScalarNode {
		return nil
	}
	return n
}

// FuzzConfigLoader feeds arbitrary files to load, seeded with the invalid
// cases and the example config: it may refuse them, never panic, and what
// it refuses wraps config.ErrInvalid.
func FuzzConfigLoader[C any](f *testing.F, example string, load func(path string) (C, error)) {
	for _, c := range ReadInvalidConfigs(f) {
		f.Add([]byte(c.Config))
	}
	if ex, err := os.ReadFile(example); err == nil {
		f.Add(ex)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := load(path); err != nil && !errors.Is(err, config.ErrInvalid) {
			t.Fatalf("error does not wrap config.ErrInvalid: %v", err)
		}
	})
}
