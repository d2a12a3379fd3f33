package plantsim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Kinds of MES message the simulator publishes, in the order it cycles
// through them. The kind is the last level of the MQTT topic.
const (
	KindCompletion  = "completion"  // an order produced a quantity of its item
	KindConsumption = "consumption" // an order used a quantity of a component lot
	KindShortage    = "shortage"    // a component is missing for an order
)

// Kinds lists every message kind in publishing order.
func Kinds() []string {
	return []string{KindCompletion, KindConsumption, KindShortage}
}

// ErrUnknownKind is returned by Sim.Publish for a kind outside Kinds.
var ErrUnknownKind = errors.New("unknown mes message kind")

// Message is the JSON payload of every MES message. Quantities are decimal
// strings so that no consumer ever rounds them through a float.
type Message struct {
	// MessageID is unique per message and stable across redelivery:
	// <plant>-<kind>-<run id>-<sequence>.
	MessageID  string `json:"message_id"`
	Order      string `json:"order"`
	Item       string `json:"item"`
	Quantity   string `json:"quantity"`
	Unit       string `json:"unit"`
	WorkCenter string `json:"work_center"`
	// OccurredAt is RFC 3339 with nanoseconds, always UTC.
	OccurredAt string `json:"occurred_at"`
	// RequiredBy is set on shortages only: the date (2006-01-02) the
	// component is needed.
	RequiredBy string `json:"required_by,omitempty"`
	// Lot is set on consumptions only.
	Lot string `json:"lot,omitempty"`
}

// Topic returns the MQTT topic of an MES message: mes/<plant>/<line>/<kind>.
func Topic(plant, line, kind string) string {
	return "mes/" + plant + "/" + line + "/" + kind
}

// The catalogue is fixed so that tests and crosswalk samples can name real
// orders and items. Consumptions and shortages name a component from the
// bill of materials of the order's product.
type productionOrder struct {
	order, item string
}

type component struct {
	item, unit string
	decimals   int // digits after the decimal point in quantities
}

var (
	catalogueOrders = []productionOrder{
		{"PO-1001", "P-4711"},
		{"PO-1002", "P-4712"},
		{"PO-1003", "P-4711"},
		{"PO-1004", "P-5120"},
	}
	steelSheet   = component{"C-2001", "KG", 3}
	bolt         = component{"C-2002", "EA", 0}
	cable        = component{"C-2003", "M", 2}
	catalogueBOM = map[string][]component{
		"P-4711": {steelSheet, bolt},
		"P-4712": {steelSheet, cable},
		"P-5120": {bolt, cable},
	}
)

// generator produces the deterministic sequence of MES messages. It is safe
// for concurrent use: the periodic publisher and Sim.Publish share it.
type generator struct {
	plant           string
	lines           []string
	machinesPerLine int
	runID           string

	mu       sync.Mutex
	rng      *rand.Rand
	seq      uint64
	nextKind int
}

func newGenerator(cfg Config, runID string) *generator {
	return &generator{
		plant:           cfg.Plant,
		lines:           append([]string(nil), cfg.Lines...),
		machinesPerLine: cfg.MachinesPerLine,
		runID:           runID,
		// A stream of its own so that MES draws never shift machine values.
		rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6d6573)),
	}
}

// next builds the next message. An empty kind continues the cycle; any
// other kind must be one of Kinds.
func (g *generator) next(kind string, now time.Time) (topic string, msg Message, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()

	kinds := Kinds()
	if kind == "" {
		kind = kinds[g.nextKind]
		g.nextKind = (g.nextKind + 1) % len(kinds)
	} else if !isKind(kind) {
		return "", Message{}, fmt.Errorf("%w: %q; want one of %v", ErrUnknownKind, kind, kinds)
	}

	g.seq++
	now = now.UTC()
	line := g.lines[g.rng.IntN(len(g.lines))]
	order := catalogueOrders[g.rng.IntN(len(catalogueOrders))]
	msg = Message{
		MessageID:  g.plant + "-" + kind + "-" + g.runID + "-" + strconv.FormatUint(g.seq, 10),
		Order:      order.order,
		WorkCenter: line + "-M" + strconv.Itoa(1+g.rng.IntN(g.machinesPerLine)),
		OccurredAt: now.Format(time.RFC3339Nano),
	}

	switch kind {
	case KindCompletion:
		msg.Item = order.item
		msg.Unit = "EA"
		msg.Quantity = strconv.Itoa(1 + g.rng.IntN(24))
	case KindConsumption:
		bom := catalogueBOM[order.item]
		c := bom[g.rng.IntN(len(bom))]
		msg.Item, msg.Unit = c.item, c.unit
		msg.Quantity = g.quantity(c.decimals)
		msg.Lot = fmt.Sprintf("LOT-%05d", g.rng.IntN(100000))
	case KindShortage:
		bom := catalogueBOM[order.item]
		c := bom[g.rng.IntN(len(bom))]
		msg.Item, msg.Unit = c.item, c.unit
		msg.Quantity = g.quantity(c.decimals)
		msg.RequiredBy = now.AddDate(0, 0, 1+g.rng.IntN(7)).Format(time.DateOnly)
	}
	return Topic(g.plant, line, kind), msg, nil
}

// quantity draws a positive amount between 1 and 50 units with the given
// number of decimals, e.g. "12.345".
func (g *generator) quantity(decimals int) string {
	scale := 1
	for range decimals {
		scale *= 10
	}
	return formatDecimal(scale+g.rng.IntN(49*scale), decimals)
}

// formatDecimal writes minor units (e.g. grams for decimals=3) as a decimal
// string without going through a float.
func formatDecimal(minor, decimals int) string {
	s := strconv.Itoa(minor)
	if decimals == 0 {
		return s
	}
	for len(s) <= decimals {
		s = "0" + s
	}
	return s[:len(s)-decimals] + "." + s[len(s)-decimals:]
}

func isKind(kind string) bool { return slices.Contains(Kinds(), kind) }
