package schema

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/hub/decimal"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// ErrInvalid wraps every validation failure.
var ErrInvalid = errors.New("event does not match its schema")

// ErrUnknownType marks an event type no schema describes.
var ErrUnknownType = errors.New("unknown event type")

// ErrVersion marks a schema_version newer than this hub knows.
var ErrVersion = errors.New("unsupported schema version")

// Kind is the value type of a field.
type Kind string

// Field kinds.
const (
	String    Kind = "string"
	Decimal   Kind = "decimal" // a decimal string, see hub/decimal
	Quantity  Kind = "quantity"
	Timestamp Kind = "timestamp"
	Bool      Kind = "bool"
	Uint      Kind = "uint"
	Int       Kind = "int"
	Double    Kind = "double" // telemetry only, never a business quantity
	Bytes     Kind = "bytes"
	List      Kind = "list"    // repeated message; Fields describe one element
	Message   Kind = "message" // nested message; Fields describe it
	Oneof     Kind = "oneof"   // exactly one of Fields is set
)

// Code names the master-data kind a field holds; the pipeline translates
// such fields through the crosswalk of that kind.
type Code string

// Master-data codes.
const (
	CodePlant      Code = "plant"
	CodeItem       Code = "item"
	CodeUnit       Code = "unit"
	CodeSupplier   Code = "supplier"
	CodeWorkCenter Code = "work_center"
	CodeWarehouse  Code = "warehouse"
)

// Field describes one field of a payload.
type Field struct {
	Name        string `json:"name"` // the proto field name
	Kind        Kind   `json:"kind"`
	Required    bool   `json:"required,omitempty"`
	Code        Code   `json:"code,omitempty"`
	Description string `json:"description"`
	// Since is the schema version that added the field; it is required only
	// of events at that version or later.
	Since    uint32  `json:"since"`
	MinItems int     `json:"min_items,omitempty"`
	Fields   []Field `json:"fields,omitempty"`

	fd protoreflect.FieldDescriptor // resolved once by New
}

// Descriptor is the proto field the schema field describes.
func (f *Field) Descriptor() protoreflect.FieldDescriptor { return f.fd }

// resolve binds fields to the descriptors of md, recursively.
func resolve(md protoreflect.MessageDescriptor, fields []Field) {
	for i := range fields {
		f := &fields[i]
		f.fd = md.Fields().ByName(protoreflect.Name(f.Name))
		switch {
		case f.Kind == Oneof:
			resolve(md, f.Fields)
		case f.fd != nil && (f.Kind == List || f.Kind == Message):
			resolve(f.fd.Message(), f.Fields)
		}
	}
}

// Type is the schema of one event type.
type Type struct {
	Name        string `json:"type"`
	Version     uint32 `json:"version"`
	Payload     string `json:"payload"` // the member of Event.payload
	Description string `json:"description"`
	// Operational types report on plantsync itself (buffer overflow, a
	// source that could not decode); the pipeline routes them to exceptions
	// and alerts.
	Operational bool    `json:"operational,omitempty"`
	Fields      []Field `json:"fields"`

	oneof protoreflect.FieldDescriptor
}

// Registry is the set of schemas of one hub version. It is immutable.
type Registry struct {
	Envelope []Field
	types    map[string]*Type
	names    []string
}

// Violation is one field that broke its schema.
type Violation struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

func (v Violation) String() string { return v.Field + ": " + v.Problem }

// ValidationError lists every violation of one event.
type ValidationError struct {
	Type       string
	Violations []Violation
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.String()
	}
	return fmt.Sprintf("%s: %s", e.Type, strings.Join(parts, "; "))
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// New builds the registry of this hub version.
func New() *Registry {
	r := &Registry{Envelope: envelope(), types: map[string]*Type{}}
	md := (&pb.Event{}).ProtoReflect().Descriptor()
	resolve(md, r.Envelope)
	od := md.Oneofs().ByName("payload")
	for _, t := range types() {
		t.oneof = od.Fields().ByName(protoreflect.Name(t.Payload))
		if t.oneof != nil {
			resolve(t.oneof.Message(), t.Fields)
		}
		r.types[t.Name] = t
		r.names = append(r.names, t.Name)
	}
	sort.Strings(r.names)
	return r
}

// Lookup returns the schema of an event type.
func (r *Registry) Lookup(name string) (*Type, bool) {
	t, ok := r.types[name]
	return t, ok
}

// Types lists every schema, sorted by type name.
func (r *Registry) Types() []*Type {
	out := make([]*Type, len(r.names))
	for i, n := range r.names {
		out[i] = r.types[n]
	}
	return out
}

// Validate checks an event's envelope and payload against the schema of
// its type. Errors wrap ErrUnknownType, ErrVersion or ErrInvalid (a
// *ValidationError listing every violation).
func (r *Registry) Validate(ev *pb.Event) (*Type, error) {
	t, ok := r.types[ev.GetType()]
	if !ok {
		return nil, fmt.Errorf("%w %q; known types: %s", ErrUnknownType, ev.GetType(), strings.Join(r.names, ", "))
	}
	version := ev.GetSchemaVersion()
	if version == 0 {
		version = 1 // producers from before schema_version was set
	}
	if version > t.Version {
		return t, fmt.Errorf("%w: %s version %d, this hub knows up to %d; upgrade the hub", ErrVersion, t.Name, version, t.Version)
	}
	var vs []Violation
	m := ev.ProtoReflect()
	vs = checkFields(m, r.Envelope, "", version, vs)
	if t.oneof == nil || !m.Has(t.oneof) {
		vs = append(vs, Violation{Field: t.Payload, Problem: fmt.Sprintf("missing; a %s event carries its data in %s", t.Name, t.Payload)})
	} else {
		vs = checkFields(m.Get(t.oneof).Message(), t.Fields, t.Payload+".", version, vs)
	}
	if len(vs) > 0 {
		return t, &ValidationError{Type: t.Name, Violations: vs}
	}
	return t, nil
}

func checkFields(m protoreflect.Message, fields []Field, prefix string, version uint32, vs []Violation) []Violation {
	for i := range fields {
		f := &fields[i]
		// The path is only made for a violation or a nested field: the
		// concatenation would cost an allocation per field and event.
		required := f.Required && version >= max(f.Since, 1)
		if f.Kind == Oneof {
			set := 0
			for _, alt := range f.Fields {
				if fd := alt.fd; fd != nil && m.Has(fd) {
					set++
					if alt.Kind == Decimal {
						if err := checkDecimal(m.Get(fd).String()); err != "" {
							vs = append(vs, Violation{prefix + alt.Name, err})
						}
					}
				}
			}
			if set == 0 && required {
				vs = append(vs, Violation{prefix + f.Name, "missing; set one of " + names(f.Fields)})
			}
			continue
		}
		fd := f.fd
		if fd == nil {
			continue
		}
		if !m.Has(fd) {
			switch {
			case f.Kind == List && f.MinItems > 0 && version >= max(f.Since, 1):
				vs = append(vs, Violation{prefix + f.Name, fmt.Sprintf("has 0 entries; want at least %d", f.MinItems)})
			case required:
				vs = append(vs, Violation{prefix + f.Name, "missing"})
			}
			continue
		}
		v := m.Get(fd)
		switch f.Kind {
		case String:
			if required && strings.TrimSpace(v.String()) == "" {
				vs = append(vs, Violation{prefix + f.Name, "blank"})
			}
		case Decimal:
			if err := checkDecimal(v.String()); err != "" {
				vs = append(vs, Violation{prefix + f.Name, err})
			}
		case Quantity:
			vs = checkQuantity(v.Message(), prefix, f.Name, vs)
		case Timestamp:
			if err := checkTimestamp(v.Message().Interface()); err != "" {
				vs = append(vs, Violation{prefix + f.Name, err})
			}
		case Message:
			vs = checkFields(v.Message(), f.Fields, prefix+f.Name+".", version, vs)
		case List:
			l := v.List()
			path := prefix + f.Name
			if l.Len() < f.MinItems {
				vs = append(vs, Violation{path, fmt.Sprintf("has %d entries; want at least %d", l.Len(), f.MinItems)})
			}
			for j := 0; j < l.Len(); j++ {
				vs = checkFields(l.Get(j).Message(), f.Fields, fmt.Sprintf("%s[%d].", path, j), version, vs)
			}
		}
	}
	return vs
}

func names(fs []Field) string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Name
	}
	return strings.Join(out, ", ")
}

func checkDecimal(s string) string {
	_, problem := parseDecimal(s)
	return problem
}

// parseDecimal parses a decimal string field; problem says what is wrong
// with it.
func parseDecimal(s string) (d decimal.Decimal, problem string) {
	if s == "" {
		return d, "blank; want a decimal string such as \"12.5\""
	}
	d, err := decimal.Parse(s)
	if err != nil {
		return d, fmt.Sprintf("%q is not a decimal string; want e.g. \"12.5\" (no exponent, no thousands separator)", s)
	}
	return d, ""
}

// checkQuantity checks the quantity at prefix+name; the path is only made
// for a violation.
func checkQuantity(q protoreflect.Message, prefix, name string, vs []Violation) []Violation {
	qq, ok := q.Interface().(*pb.Quantity)
	if !ok {
		return append(vs, Violation{prefix + name, "not a quantity"})
	}
	if d, err := parseDecimal(qq.GetValue()); err != "" {
		vs = append(vs, Violation{prefix + name + ".value", err})
	} else if d.Sign() < 0 {
		vs = append(vs, Violation{prefix + name + ".value", fmt.Sprintf("%q is negative; quantities are amounts, direction comes from the event type", qq.GetValue())})
	}
	if strings.TrimSpace(qq.GetUnit()) == "" {
		vs = append(vs, Violation{prefix + name + ".unit", "blank; want the unit code, e.g. EA or KG"})
	}
	return vs
}

func checkTimestamp(m proto.Message) string {
	ts, ok := m.(*timestamppb.Timestamp)
	if !ok {
		return "not a timestamp"
	}
	secs, nanos := ts.GetSeconds(), ts.GetNanos()
	// 0001-01-01 to 9999-12-31, as google.protobuf.Timestamp defines.
	if secs < -62135596800 || secs > 253402300799 || nanos < 0 || nanos > 999999999 {
		return "not a valid timestamp"
	}
	if secs == 0 && nanos == 0 {
		return "unset (epoch zero); want the actual time"
	}
	return ""
}
