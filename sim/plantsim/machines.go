package plantsim

import (
	"math"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"
)

// Machine states as the OPC UA State variable shows them.
const (
	StateRunning = "Running"
	StateIdle    = "Idle"
	StateDown    = "Down"
)

// Indexes into stateNames; stored in an atomic so that the OPC UA server can
// read while the simulation writes.
const (
	stateRunning uint32 = iota
	stateIdle
	stateDown
)

var stateNames = [...]string{stateRunning: StateRunning, stateIdle: StateIdle, stateDown: StateDown}

// Variable names under each machine; the NodeId is ns=2;s=<line>.<machine>.<name>.
const (
	VarState       = "State"
	VarGoodCount   = "GoodCount"
	VarTemperature = "Temperature"
)

// NodeID returns the string NodeId of a machine variable, e.g.
// NodeID("L1", 1, VarGoodCount) is "ns=2;s=L1.M1.GoodCount".
func NodeID(line string, machine int, variable string) string {
	return "ns=" + strconv.Itoa(namespaceIndex) + ";s=" + machineKey(line, machine) + "." + variable
}

func machineKey(line string, machine int) string {
	return line + ".M" + strconv.Itoa(machine)
}

// machine holds one machine's values. The value fields are atomics because
// the OPC UA server reads them from its own goroutines; everything else is
// only touched by the simulation goroutine.
type machine struct {
	line  string
	index int // 1-based: M1, M2, ...

	state       atomic.Uint32
	goodCount   atomic.Uint32
	temperature atomic.Uint64 // math.Float64bits
	// Unix nanoseconds of each value's last change: the OPC UA source
	// timestamp.
	stateAt, countAt, tempAt atomic.Int64

	pauseTicks int // ticks left before an idle or down machine runs again
}

func (m *machine) key() string { return machineKey(m.line, m.index) }

func (m *machine) stateName() string { return stateNames[m.state.Load()] }
func (m *machine) count() uint32     { return m.goodCount.Load() }
func (m *machine) temp() float64     { return math.Float64frombits(m.temperature.Load()) }

// plant is the set of machines and the deterministic process that moves
// their values.
type plant struct {
	machines []*machine
	rng      *rand.Rand // only used by step, which runs on one goroutine
}

func newPlant(cfg Config, now time.Time) *plant {
	p := &plant{rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6d6163))}
	ts := now.UnixNano()
	for _, line := range cfg.Lines {
		for i := 1; i <= cfg.MachinesPerLine; i++ {
			m := &machine{line: line, index: i}
			m.state.Store(stateRunning)
			m.goodCount.Store(uint32(p.rng.IntN(500)))
			m.temperature.Store(math.Float64bits(roundTenth(55 + 10*p.rng.Float64())))
			m.stateAt.Store(ts)
			m.countAt.Store(ts)
			m.tempAt.Store(ts)
			p.machines = append(p.machines, m)
		}
	}
	return p
}

// change says which variables of a machine changed in one step.
type change struct {
	m                  *machine
	state, count, temp bool
}

// step advances every machine by one interval. Running machines make parts
// and warm up; now and then one stops for a few intervals. Stops are short
// so that a consumer always sees counts rise within a few intervals.
func (p *plant) step(now time.Time) []change {
	ts := now.UnixNano()
	changes := make([]change, 0, len(p.machines))
	for _, m := range p.machines {
		c := change{m: m}
		state := m.state.Load()
		switch state {
		case stateRunning:
			switch r := p.rng.Float64(); {
			case r < 0.02:
				state, m.pauseTicks = stateDown, 2+p.rng.IntN(2)
			case r < 0.07:
				state, m.pauseTicks = stateIdle, 1+p.rng.IntN(2)
			default:
				m.goodCount.Add(uint32(1 + p.rng.IntN(3)))
				m.countAt.Store(ts)
				c.count = true
			}
		default:
			m.pauseTicks--
			if m.pauseTicks <= 0 {
				state = stateRunning
			}
		}
		if state != m.state.Load() {
			m.state.Store(state)
			m.stateAt.Store(ts)
			c.state = true
		}

		target := 25.0
		switch state {
		case stateRunning:
			target = 65
		case stateIdle:
			target = 40
		}
		t := m.temp()
		next := roundTenth(t + (target-t)*0.2 + p.rng.Float64() - 0.5)
		if next != t {
			m.temperature.Store(math.Float64bits(next))
			m.tempAt.Store(ts)
			c.temp = true
		}
		changes = append(changes, c)
	}
	return changes
}

func roundTenth(v float64) float64 { return math.Round(v*10) / 10 }
