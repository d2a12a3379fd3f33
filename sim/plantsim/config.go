package plantsim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"
)

// Limits that keep a simulated plant small enough for one process and a
// test machine with two cores.
const (
	maxLines           = 50
	maxMachinesPerLine = 100
	minMachineInterval = 10 * time.Millisecond
	minMESInterval     = time.Millisecond
)

// Config describes the simulated plant. The zero value is not useful: start
// from NewDefaultConfig.
type Config struct {
	// Plant names the plant in MES topics and message ids, e.g. "DE-01".
	Plant string `yaml:"plant"`
	// Lines are the production line ids, e.g. ["L1", "L2"]. They appear in
	// OPC UA NodeIds (ns=2;s=L1.M1.State) and in MQTT topics.
	Lines []string `yaml:"lines"`
	// MachinesPerLine is how many machines (M1..Mn) each line has.
	MachinesPerLine int `yaml:"machines_per_line"`
	// OPCUAListen is the host:port the OPC UA server binds to; port 0 picks
	// a free port (read it back with Sim.OPCUAEndpoint).
	OPCUAListen string `yaml:"opcua_listen"`
	// MQTTListen is the host:port the MQTT broker binds to; port 0 picks a
	// free port (read it back with Sim.MQTTAddr).
	MQTTListen string `yaml:"mqtt_listen"`
	// MESInterval is how often an MES message is published. Zero turns
	// periodic publishing off; Sim.Publish still works.
	MESInterval time.Duration `yaml:"mes_interval"`
	// MachineInterval is how often machine values (state, counts,
	// temperature) change.
	MachineInterval time.Duration `yaml:"machine_interval"`
	// Seed makes the sequence of machine values and MES messages repeatable;
	// only timestamps and the run id in message ids differ between runs.
	Seed int64 `yaml:"seed"`
}

// NewDefaultConfig returns the defaults: one line with three machines on
// loopback ports picked by the kernel.
func NewDefaultConfig() Config {
	return Config{
		Plant:           "DE-01",
		Lines:           []string{"L1"},
		MachinesPerLine: 3,
		OPCUAListen:     "127.0.0.1:0",
		MQTTListen:      "127.0.0.1:0",
		MESInterval:     500 * time.Millisecond,
		MachineInterval: time.Second,
		Seed:            0,
	}
}

// ErrInvalidConfig is wrapped by every error Validate and ParseConfig return
// for a configuration that cannot be used.
var ErrInvalidConfig = errors.New("invalid plantsim config")

// idPattern restricts plant and line ids to characters that are safe in MQTT
// topic levels (no '/', '+', '#') and in the dotted OPC UA string NodeIds
// (no '.').
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// Validate reports every problem in c at once, each naming its field. It
// does not touch the network.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	if !idPattern.MatchString(c.Plant) {
		add("plant: %q is not a plant id; want 1-64 letters, digits, '-' or '_', e.g. DE-01", c.Plant)
	}
	switch {
	case len(c.Lines) == 0:
		add("lines: empty; want at least one line id, e.g. [L1]")
	case len(c.Lines) > maxLines:
		add("lines: %d lines; want at most %d", len(c.Lines), maxLines)
	}
	seen := make(map[string]int, len(c.Lines))
	for i, l := range c.Lines {
		if !idPattern.MatchString(l) {
			add("lines[%d]: %q is not a line id; want letters, digits, '-' or '_', e.g. L1", i, l)
			continue
		}
		if j, dup := seen[l]; dup {
			add("lines[%d]: %q repeats lines[%d]; line ids must be unique", i, l, j)
			continue
		}
		seen[l] = i
	}
	if c.MachinesPerLine < 1 || c.MachinesPerLine > maxMachinesPerLine {
		add("machines_per_line: %d; want 1 to %d", c.MachinesPerLine, maxMachinesPerLine)
	}
	if err := validateListen(c.OPCUAListen); err != nil {
		add("opcua_listen: %w", err)
	}
	if err := validateListen(c.MQTTListen); err != nil {
		add("mqtt_listen: %w", err)
	}
	if c.MESInterval != 0 && c.MESInterval < minMESInterval {
		add("mes_interval: %s; want 0 (off) or at least %s", c.MESInterval, minMESInterval)
	}
	if c.MachineInterval < minMachineInterval {
		add("machine_interval: %s; want at least %s", c.MachineInterval, minMachineInterval)
	}

	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
}

func validateListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port; want e.g. 127.0.0.1:4840 or 127.0.0.1:0", addr)
	}
	if host == "" {
		return fmt.Errorf("%q has no host; want e.g. 127.0.0.1:%s (0.0.0.0 listens on every interface)", addr, port)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return nil
}

// ParseConfig reads YAML over the defaults, so a file only names what it
// changes, then validates the result. Unknown fields are errors: a typo must
// not silently fall back to a default.
func ParseConfig(data []byte) (Config, error) {
	cfg := NewDefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}
