package mqtt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"github.com/google/uuid"
	"github.com/valyala/fastjson"
)

// idNamespace scopes derived event ids to MQTT message ids.
var idNamespace = uuid.MustParse("6f1c5a52-8b0e-4c55-9a53-6a2d3f5e0b11")

// EventID derives the event id from the plant, the source and the message's
// own id, so a redelivery yields the same id (DESIGN.md rule 2). The
// formula is fixed: changing it would turn redeliveries across an upgrade
// into duplicates.
func EventID(plant, sourceName, messageID string) string {
	return uuid.NewSHA1(idNamespace, []byte(plant+"\x00"+sourceName+"\x00"+messageID)).String()
}

// maxPayload bounds what the mapper decodes; larger messages are
// quarantined rather than parsed.
const maxPayload = 4 << 20

// mapError is why a message could not be mapped; it names the field or the
// byte offset (DESIGN.md rule 6).
type mapError struct {
	field  string
	offset int64 // -1 when not about a position
	msg    string
}

func (e *mapError) Error() string {
	switch {
	case e.field != "":
		return "field " + e.field + ": " + e.msg
	case e.offset >= 0:
		return fmt.Sprintf("byte offset %d: %s", e.offset, e.msg)
	}
	return e.msg
}

func fieldErr(field string, format string, args ...any) *mapError {
	return &mapError{field: field, offset: -1, msg: fmt.Sprintf(format, args...)}
}

// jsonPath is a compiled Value.Path: keys and list indexes.
type jsonPath []pathStep

type pathStep struct {
	key   string
	index int // >= 0 for [n]
}

func parsePath(s string) (jsonPath, error) {
	if s == "" {
		return nil, errors.New("empty path")
	}
	var p jsonPath
	for _, part := range strings.Split(s, ".") {
		key, rest, _ := strings.Cut(part, "[")
		if key == "" && (rest == "" || len(p) > 0) {
			return nil, fmt.Errorf("%q: empty key; want e.g. header.lines[0].qty", s)
		}
		if key != "" {
			p = append(p, pathStep{key: key, index: -1})
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			n, err := strconv.Atoi(idx)
			if !ok || err != nil || n < 0 {
				return nil, fmt.Errorf("%q: %q is not a list index; want [0], [1], ...", s, "["+rest)
			}
			p = append(p, pathStep{index: n})
			if after == "" {
				break
			}
			if !strings.HasPrefix(after, "[") {
				return nil, fmt.Errorf("%q: unexpected %q after ]", s, after)
			}
			rest = after[1:]
		}
	}
	return p, nil
}

// lookup returns the value at p, or ok=false when a step is absent.
func (p jsonPath) lookup(doc any) (any, bool) {
	if v, ok := doc.(*fastjson.Value); ok {
		return p.lookupFast(v)
	}
	cur := doc
	for _, st := range p {
		if st.index < 0 {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, false
			}
			if cur, ok = m[st.key]; !ok {
				return nil, false
			}
			continue
		}
		l, ok := cur.([]any)
		if !ok || st.index >= len(l) {
			return nil, false
		}
		cur = l[st.index]
	}
	return cur, true
}

func (p jsonPath) String() string {
	var b strings.Builder
	for _, st := range p {
		if st.index >= 0 {
			fmt.Fprintf(&b, "[%d]", st.index)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(st.key)
	}
	return b.String()
}

// compiledField is one Value, ready to evaluate.
type compiledField struct {
	name     string
	kind     fieldKind
	val      Value
	path     jsonPath
	unitPath jsonPath
	prog     *celProgram
}

// compiledSub is a Subscription checked and compiled once.
type compiledSub struct {
	cfg     Subscription
	topic   topicPattern
	format  string
	schema  *eventSchema
	idPath  jsonPath
	fields  []compiledField
	attrs   []compiledField
	dropIf  *celProgram
	usesCEL bool
	usesRaw bool
}

// compileSubscription validates s (prefix names it in errors) and compiles
// its topic, paths and expressions.
func compileSubscription(s Subscription, prefix string) (*compiledSub, []error) {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(prefix+"."+format, args...)) }
	cs := &compiledSub{cfg: s, format: s.format()}
	tp, err := parseTopic(s.Topic)
	if err != nil {
		add("topic: %v", err)
	}
	cs.topic = tp
	if s.QoS < QoS0 || s.QoS > QoS2 {
		if s.QoS == qosInvalid {
			add("qos: negative; want 0, 1 or 2 (1 recommended: acked after the buffer commit)")
		} else {
			add("qos: %d; want 0, 1 or 2 (1 recommended: acked after the buffer commit)", s.QoS)
		}
	}
	celEnv := func() *cel.Env {
		env, err := sharedCELEnv()
		if err != nil {
			add("cel: %v", err) // not expected: the environment is fixed
		}
		return env
	}
	compile := func(field, expr string, wantBool bool) *celProgram {
		e := celEnv()
		if e == nil {
			return nil
		}
		p, err := compileCEL(e, expr, wantBool)
		if err != nil {
			add("%s: %q does not compile: %v", field, expr, oneLine(err.Error()))
			return nil
		}
		cs.usesCEL = true
		cs.usesRaw = cs.usesRaw || p.usesRaw
		return p
	}

	switch cs.format {
	case FormatJSON, FormatText, FormatNumber:
		et := s.EventType
		schema, ok := schemas[et]
		if !ok {
			add("event_type: %q is not supported by the MQTT mapper; want one of %s", et, strings.Join(eventTypes(), ", "))
		}
		cs.schema = schema
		switch {
		case s.IDField != "" && s.ContentHash:
			add("content_hash: set either id_field (the message's own id) or content_hash, not both")
		case s.IDField != "" && cs.format != FormatJSON:
			add("id_field: a %s payload has no fields; use content_hash: true", cs.format)
		case s.IDField != "":
			if cs.idPath, err = parsePath(s.IDField); err != nil {
				add("id_field: %v", err)
			}
		case !s.ContentHash && cs.format == FormatJSON:
			add("id_field: required: the JSON key holding the message's own id, e.g. message_id; where messages carry none, set content_hash: true instead (see README: byte-identical messages inside the window count as one)")
		case !s.ContentHash:
			add("content_hash: required for %s payloads, which carry no id: set content_hash: true", cs.format)
		}
		if schema != nil {
			for _, name := range sortedKeys(s.Fields) {
				kind, ok := schema.fieldKindOf(name)
				if !ok {
					add("fields.%s: %q is not a field of %s; want one of %s", name, name, et, strings.Join(schema.fieldNames(), ", "))
					continue
				}
				if f, ok := compileValue(s.Fields[name], "fields."+name, kind, tp, add, compile); ok {
					f.name = name
					cs.fields = append(cs.fields, f)
				}
			}
			// Fields the subscription leaves out keep the plain reader's
			// conventional keys.
			defaults := schema.defaults
			for _, name := range append(sortedKeys(defaults), fieldOccurredAt) {
				if _, mapped := s.Fields[name]; mapped {
					continue
				}
				v, ok := defaults[name]
				if name == fieldOccurredAt {
					v, ok = opt(fieldOccurredAt), true
				}
				if !ok {
					continue
				}
				if cs.format != FormatJSON && name != "value" {
					continue // text and number payloads only have "value"
				}
				kind, _ := schema.fieldKindOf(name)
				f, _ := compileValue(v, "fields."+name, kind, tp, add, compile)
				f.name = name
				cs.fields = append(cs.fields, f)
			}
		}
		for _, name := range sortedKeys(s.Attributes) {
			if name == "" || name == "topic" || name == "message_id" {
				add("attributes.%s: %q is reserved (set by the source)", name, name)
				continue
			}
			v := s.Attributes[name]
			if f, ok := compileValue(v, "attributes."+name, kindString, tp, add, compile); ok {
				f.name = name
				cs.attrs = append(cs.attrs, f)
			}
		}
		if s.DropIf != "" {
			cs.dropIf = compile("drop_if", s.DropIf, true)
		}
	case FormatSparkplugB:
		if s.EventType != "" && s.EventType != "observation" {
			add("event_type: %q; Sparkplug B metrics become observation events (births and deaths machine.state); leave it out or write observation", s.EventType)
		}
		if s.IDField != "" || s.ContentHash {
			add("id_field: Sparkplug B messages get their ids from edge node, sequence number and timestamp; remove id_field and content_hash")
		}
		if len(s.Fields) > 0 || len(s.Attributes) > 0 || s.DropIf != "" {
			add("fields: mapping options are for json, text and number payloads; Sparkplug B metrics map one to one onto observations")
		}
	default:
		add("data_format: %q; want json, sparkplug_b, text or number", s.DataFormat)
	}
	return cs, errs
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// compileValue checks one Value for a field of kind.
func compileValue(v Value, field string, kind fieldKind, tp topicPattern, add func(string, ...any), compile func(string, string, bool) *celProgram) (compiledField, bool) {
	f := compiledField{kind: kind, val: v}
	ok := true
	fail := func(format string, args ...any) {
		add(field+": "+format, args...)
		ok = false
	}
	if n := v.sources(); n != 1 {
		fail("give exactly one of path, const, capture or cel (got %d)", n)
	}
	var err error
	if v.Path != "" {
		if f.path, err = parsePath(v.Path); err != nil {
			fail("path: %v", err)
		}
	}
	if v.Capture != "" {
		found := false
		for _, n := range tp.captureNames() {
			found = found || n == v.Capture
		}
		if !found && tp.filter != "" {
			fail("capture %q is not in the topic; captures there: %s", v.Capture, strings.Join(append([]string{}, tp.captureNames()...), ", "))
		}
	}
	if v.CEL != "" {
		if f.prog = compile(field+".cel", v.CEL, false); f.prog == nil {
			ok = false
		}
	}
	if kind != kindQuantity && (v.Unit != "" || v.UnitPath != "" || v.FromUnit != "") {
		fail("unit, unit_path and from_unit are for quantity fields; this is a %s field", kind)
	}
	if v.UnitPath != "" {
		if f.unitPath, err = parsePath(v.UnitPath); err != nil {
			fail("unit_path: %v", err)
		}
	}
	if v.Unit != "" && v.UnitPath != "" && v.FromUnit != "" {
		fail("from_unit and unit_path both name the source unit; keep one")
	}
	if v.FromUnit != "" {
		if v.Unit == "" {
			fail("from_unit needs unit, the unit to convert into")
		} else if err := checkConversion(v.FromUnit, v.Unit); err != nil {
			fail("%v", err)
		}
	}
	if v.Format != "" && kind != kindTime {
		fail("format is for time fields; this is a %s field", kind)
	}
	if v.Default != "" && v.Optional {
		fail("default and optional exclude each other")
	}
	if v.Const != "" || v.Default != "" {
		// A constant must convert like a payload value would.
		for _, c := range []string{v.Const, v.Default} {
			if c == "" {
				continue
			}
			if _, err := convert(kind, c, v); err != nil {
				fail("%q: %v", c, err)
			}
		}
	}
	return f, ok
}

// mapped is what the mapper makes of one JSON, text or number message.
type mapped struct {
	dropped bool
	msgID   string
	fields  fieldValues
	attrs   map[string]string
}

// decodePayload turns a message into the document paths and CEL read.
func (cs *compiledSub) decodePayload(payload []byte) (any, *mapError) {
	if len(payload) > maxPayload {
		return nil, &mapError{offset: -1, msg: fmt.Sprintf("payload of %d bytes exceeds %d", len(payload), maxPayload)}
	}
	switch cs.format {
	case FormatText:
		if !utf8.Valid(payload) {
			return nil, &mapError{offset: int64(invalidUTF8At(payload)), msg: "text payload is not valid UTF-8"}
		}
		return map[string]any{"value": strings.TrimSpace(string(payload))}, nil
	case FormatNumber:
		s := strings.TrimSpace(string(payload))
		if _, err := parseDecimal(s); err != nil {
			return nil, &mapError{offset: -1, msg: "number payload: " + err.Error()}
		}
		return map[string]any{"value": json.Number(s)}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, jsonError(err, dec.InputOffset())
	}
	if _, ok := doc.(map[string]any); !ok {
		return nil, &mapError{offset: 0, msg: "invalid JSON: want an object ({...})"}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &mapError{offset: dec.InputOffset(), msg: "invalid JSON: data after the top-level object"}
	}
	return doc, nil
}

func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// jsonError locates a JSON syntax error by byte offset.
func jsonError(err error, at int64) *mapError {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &mapError{offset: se.Offset, msg: "invalid JSON: " + err.Error()}
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &mapError{offset: te.Offset, msg: "invalid JSON: " + err.Error()}
	}
	if errors.Is(err, io.EOF) {
		return &mapError{offset: 0, msg: "empty payload; want a JSON object"}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &mapError{offset: at, msg: "invalid JSON: unexpected end of payload"}
	}
	return &mapError{offset: at, msg: "invalid JSON: " + err.Error()}
}

// mapDoc applies the subscription's mapping to a decoded document.
func (cs *compiledSub) mapDoc(doc any, topic string, caps map[string]string) (*mapped, *mapError) {
	var in *celInput
	if cs.usesCEL {
		in = newCELInput(doc, topic, caps, cs.usesRaw)
	}
	if cs.dropIf != nil {
		v, err := cs.dropIf.eval(in)
		if err != nil {
			return nil, fieldErr("drop_if", "%v", err)
		}
		if b, _ := v.(bool); b {
			return &mapped{dropped: true}, nil
		}
	}
	m := &mapped{fields: make(fieldValues, len(cs.fields)), attrs: make(map[string]string, len(caps)+len(cs.attrs))}
	if cs.idPath != nil {
		raw, ok := cs.idPath.lookup(doc)
		id, _ := convert(kindString, raw, Value{})
		if !ok || raw == nil || id == nil || id.(string) == "" {
			return nil, fieldErr(cs.idPath.String(), "missing message id (id_field)")
		}
		m.msgID = id.(string)
	}
	for k, v := range caps {
		m.attrs[k] = v
	}
	for i := range cs.fields {
		f := &cs.fields[i]
		v, err := f.eval(doc, caps, in)
		if err != nil {
			return nil, err
		}
		if v != nil {
			m.fields[f.name] = v
		}
	}
	for i := range cs.attrs {
		f := &cs.attrs[i]
		v, err := f.eval(doc, caps, in)
		if err != nil {
			err.field = "attributes." + f.name
			return nil, err
		}
		if s, ok := v.(string); ok {
			m.attrs[f.name] = s
		}
	}
	return m, nil
}

// eval reads and converts one field; nil means an optional field left empty.
func (f *compiledField) eval(doc any, caps map[string]string, in *celInput) (any, *mapError) {
	var raw any
	present := true
	switch {
	case f.path != nil:
		raw, present = f.path.lookup(doc)
		present = present && raw != nil
	case f.val.Const != "":
		raw = f.val.Const
	case f.val.Capture != "":
		raw, present = caps[f.val.Capture]
	case f.prog != nil:
		v, err := f.prog.eval(in)
		if err != nil {
			return nil, fieldErr(f.name, "cel: %v", err)
		}
		raw, present = v, v != nil
	}
	if !present {
		switch {
		case f.val.Default != "":
			raw = f.val.Default
		case f.val.Optional:
			return nil, nil
		case f.path != nil:
			return nil, fieldErr(f.name, "missing at path %s", f.path)
		default:
			return nil, fieldErr(f.name, "no value")
		}
	}
	v, err := convert(f.kind, raw, f.val)
	if err != nil {
		return nil, fieldErr(f.name, "%v", err)
	}
	if f.kind == kindQuantity {
		q := v.(*quantityValue)
		unit := f.val.Unit
		from := f.val.FromUnit
		if f.unitPath != nil {
			u, ok := f.unitPath.lookup(doc)
			us, _ := convert(kindString, u, Value{})
			if ok && us != nil {
				from = us.(string)
			}
			if unit == "" {
				unit = from
			}
		}
		value := q.value
		if from != "" && unit != "" && from != unit {
			if value, err = convertUnit(value, from, unit); err != nil {
				return nil, fieldErr(f.name, "%v", err)
			}
		} else if unit == "" {
			unit = from
		}
		return newQuantity(value, unit), nil
	}
	return v, nil
}

// quantityValue is a converted decimal before its unit is known.
type quantityValue struct{ value string }

// convert turns a payload, constant or CEL value into kind.
func convert(kind fieldKind, raw any, v Value) (any, error) {
	switch kind {
	case kindString:
		switch x := raw.(type) {
		case string:
			return x, nil
		case json.Number:
			return x.String(), nil
		case bool:
			return strconv.FormatBool(x), nil
		case int64:
			return strconv.FormatInt(x, 10), nil
		case uint64:
			return strconv.FormatUint(x, 10), nil
		case float64:
			return strconv.FormatFloat(x, 'f', -1, 64), nil
		case time.Time:
			return x.UTC().Format(time.RFC3339Nano), nil
		}
	case kindQuantity, kindValue:
		var text string
		switch x := raw.(type) {
		case string:
			if kind == kindValue {
				return x, nil
			}
			text = x
		case json.Number:
			text = x.String()
		case int64:
			text = strconv.FormatInt(x, 10)
		case uint64:
			text = strconv.FormatUint(x, 10)
		case float64:
			if kind == kindValue {
				return x, nil
			}
			return nil, errCELDouble
		case bool:
			if kind == kindValue {
				return x, nil
			}
			return nil, fmt.Errorf("%v is true/false; want a decimal such as \"12.5\"", x)
		default:
			return nil, fmt.Errorf("%s; want a decimal such as \"12.5\"", describe(raw))
		}
		d, err := normalizeDecimal(text)
		if err != nil {
			return nil, err
		}
		if kind == kindValue {
			return obsDecimal(d), nil
		}
		return &quantityValue{value: d}, nil
	case kindTime:
		return convertTime(raw, v.Format)
	case kindBool:
		switch x := raw.(type) {
		case bool:
			return x, nil
		case string, json.Number:
			switch strings.ToLower(fmt.Sprint(x)) {
			case "true", "1", "yes", "on":
				return true, nil
			case "false", "0", "no", "off", "":
				return false, nil
			}
			return nil, fmt.Errorf("%q; want true or false", fmt.Sprint(x))
		case int64:
			return x != 0, nil
		}
	case kindUint:
		switch x := raw.(type) {
		case uint64:
			return x, nil
		case int64:
			if x >= 0 {
				return uint64(x), nil
			}
		case string, json.Number:
			if n, err := strconv.ParseUint(strings.TrimSpace(fmt.Sprint(x)), 10, 64); err == nil {
				return n, nil
			}
			return nil, fmt.Errorf("%q; want a whole number of 0 or more", fmt.Sprint(x))
		}
	}
	return nil, fmt.Errorf("%s cannot become %s", describe(raw), kind)
}

func describe(raw any) string {
	switch x := raw.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return strconv.Quote(x)
	}
	return fmt.Sprintf("%v", raw)
}

// convertTime reads a time given as text (RFC 3339, a date, or a Go layout)
// or as Unix seconds or milliseconds.
func convertTime(raw any, format string) (time.Time, error) {
	switch x := raw.(type) {
	case time.Time:
		return x, nil
	case string:
		switch format {
		case "", "rfc3339":
			return parseTime(x)
		case "unix", "unix_ms":
			return unixTime(x, format)
		}
		t, err := time.Parse(format, x)
		if err != nil {
			return time.Time{}, fmt.Errorf("%q does not match layout %q", x, format)
		}
		return t, nil
	case json.Number, int64, uint64:
		s := fmt.Sprint(x)
		if format != "unix" && format != "unix_ms" {
			return time.Time{}, fmt.Errorf("%s is a number; set format: unix or unix_ms", s)
		}
		return unixTime(s, format)
	}
	return time.Time{}, fmt.Errorf("%s is not a time", describe(raw))
}

func unixTime(s, format string) (time.Time, error) {
	r, err := parseDecimal(s)
	if err != nil {
		return time.Time{}, err
	}
	unit := int64(time.Second)
	if format == "unix_ms" {
		unit = int64(time.Millisecond)
	}
	r.Mul(r, new(big.Rat).SetInt64(unit))
	ns := new(big.Int).Quo(r.Num(), r.Denom())
	if !ns.IsInt64() {
		return time.Time{}, fmt.Errorf("%s is out of range for a %s time", s, format)
	}
	return time.Unix(0, ns.Int64()).UTC(), nil
}

func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time (e.g. 2026-11-27T10:00:00Z) or a date (2026-11-27)", s)
	}
	return t, nil
}
