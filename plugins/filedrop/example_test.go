package main

import (
	"os"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
)

// The sample config stays valid: its plugin section configures the
// source (with the folder swapped for one that exists here).
func TestExampleConfig(t *testing.T) {
	raw, err := os.ReadFile("filedrop.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var agent struct {
		Sources []struct {
			Config map[string]any `yaml:"config"`
		} `yaml:"sources"`
	}
	if err := yaml.Unmarshal(raw, &agent); err != nil || len(agent.Sources) != 1 {
		t.Fatalf("%v %v", agent, err)
	}
	cfg := agent.Sources[0].Config
	cfg["dir"] = t.TempDir()
	sdktest.Configure(t, sdktest.ServeSource(t, New(nil)), "legacy-mrp", cfg)
}
