package plantsim_test

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/sim/plantsim"
)

func TestDefaultConfigIsValid(t *testing.T) {
	cfg := plantsim.NewDefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if cfg.Plant != "DE-01" || len(cfg.Lines) != 1 || cfg.Lines[0] != "L1" || cfg.MachinesPerLine != 3 ||
		cfg.OPCUAListen != "127.0.0.1:0" || cfg.MQTTListen != "127.0.0.1:0" ||
		cfg.MESInterval != 500*time.Millisecond || cfg.MachineInterval != time.Second {
		t.Errorf("unexpected defaults: %+v", cfg)
	}
}

func TestParseConfigSample(t *testing.T) {
	data, err := os.ReadFile("testdata/plantsim.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := plantsim.ParseConfig(data)
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	want := plantsim.Config{
		Plant:           "DE-02",
		Lines:           []string{"L1", "L2"},
		MachinesPerLine: 4,
		OPCUAListen:     "127.0.0.1:4840",
		MQTTListen:      "127.0.0.1:1883",
		MESInterval:     200 * time.Millisecond,
		MachineInterval: 500 * time.Millisecond,
		Seed:            7,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("ParseConfig = %+v, want %+v", cfg, want)
	}

	// The shipped example must stay loadable.
	example, err := os.ReadFile("plantsim.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plantsim.ParseConfig(example); err != nil {
		t.Errorf("plantsim.example.yaml: %v", err)
	}
}

func TestParseConfigKeepsDefaults(t *testing.T) {
	for _, in := range []string{"", "# nothing\n", "seed: 3\n"} {
		cfg, err := plantsim.ParseConfig([]byte(in))
		if err != nil {
			t.Fatalf("ParseConfig(%q): %v", in, err)
		}
		def := plantsim.NewDefaultConfig()
		if cfg.Plant != def.Plant || cfg.MESInterval != def.MESInterval || cfg.MachinesPerLine != def.MachinesPerLine {
			t.Errorf("ParseConfig(%q) lost defaults: %+v", in, cfg)
		}
	}
}

func TestInvalidConfigs(t *testing.T) {
	data, err := os.ReadFile("testdata/invalid_configs.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name   string   `yaml:"name"`
		Config string   `yaml:"config"`
		Errors []string `yaml:"errors"`
	}
	if err := yaml.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no cases in testdata/invalid_configs.yaml")
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			_, err := plantsim.ParseConfig([]byte(tc.Config))
			if err == nil {
				t.Fatal("ParseConfig accepted an invalid config")
			}
			if !errors.Is(err, plantsim.ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			for _, want := range tc.Errors {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q:\n%v", want, err)
				}
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("plant: DE-01\nlines: [L1, L2]\n"))
	f.Add([]byte("mes_interval: 0s\nmachine_interval: 10ms\n"))
	f.Add([]byte("lines: [\"\"]\nmachines_per_line: -1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := plantsim.ParseConfig(data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("ParseConfig returned a config that does not validate: %v", err)
		}
	})
}
