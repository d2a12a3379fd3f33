package crosswalk

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/plantsync/plantsync/hub/decimal"
	"github.com/plantsync/plantsync/hub/schema"
)

// Sentinel errors of the package.
var (
	// ErrUnknownTable names a table no spec describes.
	ErrUnknownTable = errors.New("unknown crosswalk table")
	// ErrVersionMismatch is a replace whose If-Match is not the current version.
	ErrVersionMismatch = errors.New("crosswalk version mismatch")
	// ErrInvalidRow marks rows that break the table's column rules.
	ErrInvalidRow = errors.New("invalid crosswalk row")
)

// Direction says whether a table translates into or out of the canonical
// model.
type Direction string

// Directions.
const (
	Inbound  Direction = "inbound"
	Outbound Direction = "outbound"
)

// Wildcard in a key cell matches any value.
const Wildcard = "*"

// ColEffectiveFrom is the optional column scheduling a row ahead.
const ColEffectiveFrom = "effective_from"

// Spec is the column layout of one table.
type Spec struct {
	Name        string      `json:"name"`
	Direction   Direction   `json:"direction"`
	Kind        schema.Code `json:"kind"`
	Destination string      `json:"destination,omitempty"`
	Keys        []string    `json:"keys"`
	Values      []string    `json:"values"`
	Optional    []string    `json:"optional,omitempty"`
}

// Columns is every column the table accepts, in CSV order.
func (s Spec) Columns() []string {
	out := append(append(append([]string{}, s.Keys...), s.Values...), s.Optional...)
	return append(out, ColEffectiveFrom)
}

// inboundSpecs are the tables translating plant-local codes.
func inboundSpecs() []Spec {
	return []Spec{
		{Name: "plant", Direction: Inbound, Kind: schema.CodePlant, Keys: []string{"local_plant"}, Values: []string{"plant"}},
		{Name: "item", Direction: Inbound, Kind: schema.CodeItem, Keys: []string{"plant", "local_item"}, Values: []string{"item"}},
		{Name: "unit", Direction: Inbound, Kind: schema.CodeUnit, Keys: []string{"plant", "local_unit"}, Values: []string{"unit", "factor"}},
		{Name: "supplier", Direction: Inbound, Kind: schema.CodeSupplier, Keys: []string{"plant", "local_supplier"}, Values: []string{"supplier"}},
		{Name: "work_center", Direction: Inbound, Kind: schema.CodeWorkCenter, Keys: []string{"plant", "local_work_center"}, Values: []string{"work_center"}},
	}
}

// outboundSpecs are the tables translating canonical codes for one
// destination.
func outboundSpecs(dest string) []Spec {
	return []Spec{
		{Name: dest + ".plant", Direction: Outbound, Destination: dest, Kind: schema.CodePlant, Keys: []string{"plant"}, Values: []string{"external_plant"}},
		{Name: dest + ".item", Direction: Outbound, Destination: dest, Kind: schema.CodeItem, Keys: []string{"item"}, Values: []string{"external_item"}},
		{Name: dest + ".unit", Direction: Outbound, Destination: dest, Kind: schema.CodeUnit, Keys: []string{"unit"}, Values: []string{"external_unit", "factor"}, Optional: []string{"decimals"}},
		{Name: dest + ".supplier", Direction: Outbound, Destination: dest, Kind: schema.CodeSupplier, Keys: []string{"supplier"}, Values: []string{"external_supplier"}},
		{Name: dest + ".warehouse", Direction: Outbound, Destination: dest, Kind: schema.CodeWarehouse, Keys: []string{"plant", "warehouse"}, Values: []string{"external_warehouse"}},
	}
}

// Specs lists the inbound tables and the outbound tables of each
// destination.
func Specs(destinations []string) []Spec {
	out := inboundSpecs()
	for _, d := range destinations {
		out = append(out, outboundSpecs(d)...)
	}
	return out
}

// InboundTable is the name of the inbound table of a code kind.
func InboundTable(kind schema.Code) string { return string(kind) }

// OutboundTable is the name of a destination's table of a code kind.
func OutboundTable(dest string, kind schema.Code) string { return dest + "." + string(kind) }

// Row is one table row by column name, as CSV and the API carry it.
type Row map[string]string

// upsertKey identifies a row for upserts: its key cells and effective_from.
func (s Spec) upsertKey(r Row) string {
	var b strings.Builder
	for _, k := range s.Keys {
		b.WriteString(r[k])
		b.WriteByte(0)
	}
	b.WriteString(r[ColEffectiveFrom])
	return b.String()
}

// ParseEffectiveFrom reads a date (2026-12-01, midnight UTC) or an RFC 3339
// time.
func ParseEffectiveFrom(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a date; want YYYY-MM-DD or an RFC 3339 time", s)
	}
	return t, nil
}

// CheckRow validates one row against the spec; problems name the column.
func (s Spec) CheckRow(r Row) error {
	var errs []string
	known := map[string]bool{}
	for _, c := range s.Columns() {
		known[c] = true
	}
	for c := range r {
		if !known[c] {
			errs = append(errs, fmt.Sprintf("column %q is not known; want %s", c, strings.Join(s.Columns(), ", ")))
		}
	}
	for _, c := range append(append([]string{}, s.Keys...), s.Values...) {
		if strings.TrimSpace(r[c]) == "" {
			errs = append(errs, fmt.Sprintf("column %s: empty", c))
		} else if r[c] != strings.TrimSpace(r[c]) {
			errs = append(errs, fmt.Sprintf("column %s: %q has leading or trailing spaces", c, r[c]))
		}
	}
	for _, c := range s.Values {
		if r[c] == Wildcard {
			errs = append(errs, fmt.Sprintf("column %s: * is only allowed in key columns (%s)", c, strings.Join(s.Keys, ", ")))
		}
	}
	if f, ok := r["factor"]; ok && f != "" {
		d, err := decimal.Parse(f)
		if err != nil || d.Sign() <= 0 {
			errs = append(errs, fmt.Sprintf("column factor: %q; want a positive decimal such as 1 or 0.001", f))
		}
	}
	if v := r["decimals"]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > decimal.MaxScale {
			errs = append(errs, fmt.Sprintf("column decimals: %q; want a whole number 0 to %d", v, decimal.MaxScale))
		}
	}
	if v := r[ColEffectiveFrom]; v != "" {
		if _, err := ParseEffectiveFrom(v); err != nil {
			errs = append(errs, "column effective_from: "+err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidRow, strings.Join(errs, "; "))
	}
	return nil
}

// Table is one immutable version of a crosswalk table.
type Table struct {
	Spec      Spec      `json:"-"`
	Version   uint64    `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
	// Source is the CSV file the table was last loaded from, with its
	// SHA-256, so an unchanged file is not reloaded over API edits.
	Source     string `json:"source,omitempty"`
	SourceHash string `json:"source_hash,omitempty"`
	Rows       []Row  `json:"rows"`

	index map[string][]entry
}

type entry struct {
	from time.Time
	vals []string
}

// build sorts rows and indexes them for Lookup.
func (t *Table) build() {
	s := t.Spec
	sort.SliceStable(t.Rows, func(i, j int) bool { return s.upsertKey(t.Rows[i]) < s.upsertKey(t.Rows[j]) })
	t.index = make(map[string][]entry, len(t.Rows))
	cols := append(append([]string{}, s.Values...), s.Optional...)
	for _, r := range t.Rows {
		var from time.Time
		if v := r[ColEffectiveFrom]; v != "" {
			from, _ = ParseEffectiveFrom(v) // checked on the way in
		}
		vals := make([]string, len(cols))
		for i, c := range cols {
			vals[i] = r[c]
		}
		k := lookupKey(keysOf(s, r)...)
		t.index[k] = append(t.index[k], entry{from: from, vals: vals})
	}
	for k, es := range t.index {
		sort.Slice(es, func(i, j int) bool { return es[i].from.After(es[j].from) })
		t.index[k] = es
	}
}

func keysOf(s Spec, r Row) []string {
	out := make([]string, len(s.Keys))
	for i, k := range s.Keys {
		out[i] = r[k]
	}
	return out
}

func lookupKey(parts ...string) string {
	switch len(parts) {
	case 1:
		return parts[0]
	case 2:
		return parts[0] + "\x00" + parts[1]
	}
	return strings.Join(parts, "\x00")
}

// Lookup returns the values (Spec.Values then Spec.Optional) of the row in
// force at time at for the key. The most specific row wins: the exact key,
// then * in the first key column, then * in the second, then * in both.
func (t *Table) Lookup(at time.Time, key ...string) ([]string, bool) {
	if v, ok := t.find(at, lookupKey(key...)); ok {
		return v, true
	}
	switch len(key) {
	case 1:
		return t.find(at, Wildcard)
	case 2:
		for _, k := range [][2]string{{Wildcard, key[1]}, {key[0], Wildcard}, {Wildcard, Wildcard}} {
			if v, ok := t.find(at, lookupKey(k[0], k[1])); ok {
				return v, true
			}
		}
	}
	return nil, false
}

func (t *Table) find(at time.Time, k string) ([]string, bool) {
	for _, e := range t.index[k] {
		if !e.from.After(at) {
			return e.vals, true
		}
	}
	return nil, false
}

// Set is the snapshot of every table at one moment.
type Set struct {
	tables map[string]*Table
}

// Table returns a table; ok is false when it does not exist (codes of its
// kind pass through unchanged).
func (s *Set) Table(name string) (*Table, bool) {
	if s == nil {
		return nil, false
	}
	t, ok := s.tables[name]
	return t, ok
}

// Versions lists the version of every existing table.
func (s *Set) Versions() map[string]uint64 {
	out := make(map[string]uint64, len(s.tables))
	for n, t := range s.tables {
		out[n] = t.Version
	}
	return out
}
