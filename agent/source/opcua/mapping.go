package opcua

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// idNamespace scopes derived event ids to OPC UA values.
var idNamespace = uuid.MustParse("3d6f9a0e-57c1-4b8e-9f02-8e1c4b7a2d60")

// EventID derives an event id from the plant, the endpoint, the node, the
// value's timestamp (source timestamp, or the server timestamp where the
// source gives none), its value as text and its status. A value delivered
// twice (a subscription's initial value after a reconnect, a HistoryRead
// back-fill overlapping live values) gets the same id, so the hub drops the
// repeat (DESIGN.md rule 2). Only the severity and sub-code of the status
// count: servers set info bits (e.g. history bits) differently on live and
// historical reads of the same value.
func EventID(plant, endpoint, node string, ts time.Time, value string, status uint32) string {
	var b strings.Builder
	b.Grow(len(plant) + len(endpoint) + len(node) + len(value) + 48)
	b.WriteString(plant)
	b.WriteByte(0)
	b.WriteString(endpoint)
	b.WriteByte(0)
	b.WriteString(node)
	b.WriteByte(0)
	b.WriteString(strconv.FormatInt(ts.UnixNano(), 10))
	b.WriteByte(0)
	b.WriteString(value)
	b.WriteByte(0)
	b.WriteString(strconv.FormatUint(uint64(status&0xFFFF0000), 16))
	return uuid.NewSHA1(idNamespace, []byte(b.String())).String()
}

// payloadField finds the Event oneof member of a canonical event type:
// "machine.state" is Event.machine_state.
func payloadField(eventType string) (protoreflect.FieldDescriptor, error) {
	ed := (&pb.Event{}).ProtoReflect().Descriptor()
	fd := ed.Fields().ByName(protoreflect.Name(strings.ReplaceAll(eventType, ".", "_")))
	if eventType == "" || fd == nil || fd.ContainingOneof() == nil || fd.Message() == nil ||
		eventType == "buffer.overflow" || eventType == "source.error" || strings.Contains(eventType, "_") {
		return nil, fmt.Errorf("event_type: %q is not a canonical event type; want one of %s", eventType, strings.Join(canonicalTypes(), ", "))
	}
	return fd, nil
}

func canonicalTypes() []string {
	ed := (&pb.Event{}).ProtoReflect().Descriptor()
	oo := ed.Oneofs().ByName("payload")
	var out []string
	for i := 0; i < oo.Fields().Len(); i++ {
		t := strings.ReplaceAll(string(oo.Fields().Get(i).Name()), "_", ".")
		if t != "buffer.overflow" && t != "source.error" {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// Template variables of node values. Captures {1}..{9} follow varCapture.
const (
	varValue = iota
	varRaw
	varNodeID
	varBrowseName
	varPath
	varStatus
	varSourceTS
	varServerTS
	varCapture
)

var nodeVars = map[string]int{
	"value": varValue, "raw": varRaw, "node_id": varNodeID, "browse_name": varBrowseName,
	"path": varPath, "status": varStatus, "source_timestamp": varSourceTS, "server_timestamp": varServerTS,
}

// template is literal text with {name} variables.
type template struct {
	parts []tmplPart
}

type tmplPart struct {
	lit string
	v   int // -1 for a literal
}

// parseTemplate compiles s; lookup maps a variable name to its index.
func parseTemplate(s string, lookup func(string) (int, bool), hint string) (template, error) {
	var t template
	for len(s) > 0 {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			t.parts = append(t.parts, tmplPart{lit: s, v: -1})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, tmplPart{lit: s[:i], v: -1})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("unclosed { in %q; want {name}", s)
		}
		name := s[i+1 : i+j]
		v, ok := lookup(name)
		if !ok {
			return t, fmt.Errorf("{%s} is not a template variable; want %s", name, hint)
		}
		t.parts = append(t.parts, tmplPart{v: v})
		s = s[i+j+1:]
	}
	return t, nil
}

func (t template) render(get func(int) string) string {
	if len(t.parts) == 1 {
		p := t.parts[0]
		if p.v < 0 {
			return p.lit
		}
		return get(p.v)
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.v < 0 {
			b.WriteString(p.lit)
		} else {
			b.WriteString(get(p.v))
		}
	}
	return b.String()
}

// fieldSetter fills one payload field from a template.
type fieldSetter struct {
	name string
	path []protoreflect.FieldDescriptor
	tmpl template
}

// mapping is a compiled Mapping.
type mapping struct {
	eventType   string
	payload     protoreflect.FieldDescriptor
	observation bool
	fields      []fieldSetter
	valueMap    map[string]string
}

// compileMapping checks and compiles a node mapping; ncaptures is the
// number of browse captures the templates may use.
func compileMapping(eventType string, fields, valueMap map[string]string, ncaptures int) (*mapping, error) {
	fd, err := payloadField(eventType)
	if err != nil {
		return nil, err
	}
	m := &mapping{eventType: eventType, payload: fd, observation: eventType == "observation", valueMap: valueMap}
	lookup := func(name string) (int, bool) {
		if v, ok := nodeVars[name]; ok {
			return v, true
		}
		if n, err := strconv.Atoi(name); err == nil && n >= 1 && n <= 9 {
			return varCapture + n - 1, n <= ncaptures
		}
		return 0, false
	}
	hint := "{value}, {raw}, {node_id}, {browse_name}, {path}, {status}, {source_timestamp} or {server_timestamp}"
	if ncaptures > 0 {
		hint += fmt.Sprintf(" or a capture {1}..{%d}", ncaptures)
	} else {
		hint += " (captures {1}.. exist only in browse rules with wildcards)"
	}
	var errs fieldErrors
	for _, name := range sortedKeys(fields) {
		fs, err := compileField(fd.Message(), name, fields[name], lookup, hint)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.fields = append(m.fields, fs)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return m, nil
}

func compileField(md protoreflect.MessageDescriptor, name, tmpl string, lookup func(string) (int, bool), hint string) (fieldSetter, error) {
	fs := fieldSetter{name: name}
	cur := md
	parts := strings.Split(name, ".")
	for i, p := range parts {
		fd := cur.Fields().ByName(protoreflect.Name(p))
		if fd == nil || fd.IsList() || fd.IsMap() {
			return fs, fmt.Errorf("fields.%s: %q has no field %q; want one of %s", name, cur.Name(), p, fieldNames(cur))
		}
		fs.path = append(fs.path, fd)
		if fd.Kind() == protoreflect.MessageKind {
			if i == len(parts)-1 {
				if !leafMessage(fd.Message()) {
					return fs, fmt.Errorf("fields.%s: %s is a message; name one of its fields, e.g. %s.%s", name, p, name, fd.Message().Fields().Get(0).Name())
				}
				break
			}
			cur = fd.Message()
			continue
		}
		if i != len(parts)-1 {
			return fs, fmt.Errorf("fields.%s: %s is not a message; want a field path such as good.unit", name, p)
		}
	}
	t, err := parseTemplate(tmpl, lookup, hint)
	if err != nil {
		return fs, fmt.Errorf("fields.%s: %w", name, err)
	}
	fs.tmpl = t
	return fs, nil
}

func leafMessage(md protoreflect.MessageDescriptor) bool {
	return md.FullName() == "plantsync.v1.Quantity" || md.FullName() == "google.protobuf.Timestamp"
}

func fieldNames(md protoreflect.MessageDescriptor) string {
	var out []string
	for i := 0; i < md.Fields().Len(); i++ {
		out = append(out, string(md.Fields().Get(i).Name()))
	}
	return strings.Join(out, ", ")
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// errBadField is wrapped by field conversion failures.
var errBadField = errors.New("cannot set field")

// apply sets the configured fields of payload. It tries every field and
// reports the failures together.
func (m *mapping) apply(payload protoreflect.Message, get func(int) string) error {
	var errs []error
	for _, f := range m.fields {
		if err := setField(payload, f.path, f.tmpl.render(get)); err != nil {
			errs = append(errs, fmt.Errorf("field %s: %w", f.name, err))
		}
	}
	return errors.Join(errs...)
}

func setField(msg protoreflect.Message, path []protoreflect.FieldDescriptor, s string) error {
	for _, fd := range path[:len(path)-1] {
		msg = msg.Mutable(fd).Message()
	}
	fd := path[len(path)-1]
	var v protoreflect.Value
	switch fd.Kind() {
	case protoreflect.StringKind:
		v = protoreflect.ValueOfString(sanitize(s))
	case protoreflect.BytesKind:
		v = protoreflect.ValueOfBytes([]byte(s))
	case protoreflect.BoolKind:
		b, ok := parseBool(s)
		if !ok {
			return fmt.Errorf("%w: %q is not a boolean", errBadField, s)
		}
		v = protoreflect.ValueOfBool(b)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
		if err != nil {
			return fmt.Errorf("%w: %q is not a 32-bit integer", errBadField, s)
		}
		v = protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("%w: %q is not an integer", errBadField, s)
		}
		v = protoreflect.ValueOfInt64(n)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := parseUint(s, 32)
		if err != nil {
			return fmt.Errorf("%w: %q is not an unsigned 32-bit integer", errBadField, s)
		}
		v = protoreflect.ValueOfUint32(uint32(n))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := parseUint(s, 64)
		if err != nil {
			return fmt.Errorf("%w: %q is not an unsigned integer", errBadField, s)
		}
		v = protoreflect.ValueOfUint64(n)
	case protoreflect.DoubleKind:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("%w: %q is not a number", errBadField, s)
		}
		v = protoreflect.ValueOfFloat64(f)
	case protoreflect.FloatKind:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 32)
		if err != nil {
			return fmt.Errorf("%w: %q is not a number", errBadField, s)
		}
		v = protoreflect.ValueOfFloat32(float32(f))
	case protoreflect.MessageKind:
		switch fd.Message().FullName() {
		case "plantsync.v1.Quantity":
			if !isDecimal(s) {
				return fmt.Errorf("%w: %q is not a decimal", errBadField, s)
			}
			q := msg.Mutable(fd).Message()
			q.Set(q.Descriptor().Fields().ByName("value"), protoreflect.ValueOfString(s))
			return nil
		case "google.protobuf.Timestamp":
			t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%w: %q is not an RFC 3339 time", errBadField, s)
			}
			v = protoreflect.ValueOfMessage(timestamppb.New(t).ProtoReflect())
		default:
			return fmt.Errorf("%w: unsupported message %s", errBadField, fd.Message().FullName())
		}
	default:
		return fmt.Errorf("%w: unsupported kind %s", errBadField, fd.Kind())
	}
	msg.Set(fd, v)
	return nil
}

// parseUint also takes integral floats ("3.0") and booleans, which OPC UA
// servers often deliver for counts and flags.
func parseUint(s string, bits int) (uint64, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseUint(s, 10, bits); err == nil {
		return n, nil
	}
	if b, ok := parseBool(s); ok && (s == "true" || s == "false") {
		if b {
			return 1, nil
		}
		return 0, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f != float64(uint64(f)) || (bits == 32 && f > 4294967295) {
		return 0, fmt.Errorf("not an unsigned integer")
	}
	return uint64(f), nil
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes", "on", "active":
		return true, true
	case "false", "0", "no", "off", "inactive", "":
		return false, true
	}
	return false, false
}

func isDecimal(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	dot := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
		case c == '.' && !dot && i > 0 && i < len(s)-1:
			dot = true
		default:
			return false
		}
	}
	return true
}

// sanitize makes server text safe for proto3 string fields, which must be
// valid UTF-8: a server may send anything.
func sanitize(s string) string {
	return strings.ToValidUTF8(s, "\uFFFD")
}
