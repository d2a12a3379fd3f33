package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/hub/decimal"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// mapping is a compiled FileMapping.
type mapping struct {
	cfg     FileMapping
	format  string // csv, json or "" for auto
	delim   rune
	payload protoreflect.FieldDescriptor // the Event oneof member of the type
	fields  []fieldMap
	loc     *time.Location
}

// fieldMap is one payload field fed from one column.
type fieldMap struct {
	path   []protoreflect.FieldDescriptor
	name   string // dotted, for errors
	column string
}

// payloadField finds the Event payload member of an event type:
// "material.shortage" is the member material_shortage.
func payloadField(eventType string) (protoreflect.FieldDescriptor, []string) {
	oneof := (&pb.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")
	var names []string
	for i := range oneof.Fields().Len() {
		fd := oneof.Fields().Get(i)
		name := strings.ReplaceAll(string(fd.Name()), "_", ".")
		if name == eventType {
			return fd, nil
		}
		names = append(names, name)
	}
	return nil, names
}

var timestampName = (&timestamppb.Timestamp{}).ProtoReflect().Descriptor().FullName()

func compileMapping(prefix string, f FileMapping) (*mapping, []error) {
	var errs []error
	m := &mapping{cfg: f, delim: ','}
	if f.Pattern == "" {
		errs = append(errs, fmt.Errorf("%s.pattern: required, e.g. \"*.csv\"", prefix))
	} else if _, err := filepath.Match(f.Pattern, "x"); err != nil {
		errs = append(errs, fmt.Errorf("%s.pattern: %q: %v", prefix, f.Pattern, err))
	}
	switch f.Format {
	case "", "auto":
	case "csv", "json":
		m.format = f.Format
	default:
		errs = append(errs, fmt.Errorf("%s.format: %q; want csv, json or auto", prefix, f.Format))
	}
	if f.Delimiter != "" {
		r := []rune(f.Delimiter)
		if len(r) != 1 || r[0] == '"' || r[0] == '\n' {
			errs = append(errs, fmt.Errorf("%s.delimiter: %q; want one character such as , or ;", prefix, f.Delimiter))
		} else {
			m.delim = r[0]
		}
	}
	m.loc = time.UTC
	if f.TimeZone != "" {
		loc, err := time.LoadLocation(f.TimeZone)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.time_zone: %q: %v", prefix, f.TimeZone, err))
		} else {
			m.loc = loc
		}
	}
	for i, c := range f.IDColumns {
		if c == "" {
			errs = append(errs, fmt.Errorf("%s.id_columns[%d]: empty column name", prefix, i))
		}
	}
	fd, types := payloadField(f.EventType)
	if fd == nil {
		errs = append(errs, fmt.Errorf("%s.event_type: %q is not an event type; want one of %s", prefix, f.EventType, strings.Join(types, ", ")))
		return m, errs
	}
	m.payload = fd
	if len(f.Fields) == 0 {
		errs = append(errs, fmt.Errorf("%s.fields: map at least one payload field to a column, e.g. item: material_no", prefix))
	}
	for _, name := range sortedKeys(f.Fields) {
		path, err := fieldPath(fd.Message(), name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.fields.%s: %v", prefix, name, err))
			continue
		}
		if f.Fields[name] == "" {
			errs = append(errs, fmt.Errorf("%s.fields.%s: empty column name", prefix, name))
		}
		m.fields = append(m.fields, fieldMap{path: path, name: name, column: f.Fields[name]})
	}
	return m, errs
}

// fieldPath resolves a dotted payload field to descriptors; the last one is
// a scalar or a timestamp.
func fieldPath(md protoreflect.MessageDescriptor, dotted string) ([]protoreflect.FieldDescriptor, error) {
	var path []protoreflect.FieldDescriptor
	parts := strings.Split(dotted, ".")
	for i, p := range parts {
		fd := md.Fields().ByName(protoreflect.Name(p))
		if fd == nil {
			var names []string
			for j := range md.Fields().Len() {
				names = append(names, string(md.Fields().Get(j).Name()))
			}
			return nil, fmt.Errorf("%s has no field %q; it has %s", md.Name(), p, strings.Join(names, ", "))
		}
		if fd.IsList() || fd.IsMap() {
			return nil, fmt.Errorf("%q is a list; filedrop maps one row to one event and fills scalar fields only", p)
		}
		path = append(path, fd)
		last := i == len(parts)-1
		if fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() != timestampName {
			if last {
				return nil, fmt.Errorf("%q is a message; map its fields, e.g. %s.value and %s.unit", p, dotted, dotted)
			}
			md = fd.Message()
			continue
		}
		if !last {
			return nil, fmt.Errorf("%q is not a message", p)
		}
		if fd.Kind() == protoreflect.BytesKind {
			return nil, fmt.Errorf("%q holds bytes; filedrop does not fill it", p)
		}
	}
	return path, nil
}

// row is one data row: its 1-based line number and its values by column.
type row struct {
	line   int
	values map[string]string
	raw    string
}

// rowError is a row that cannot become an event.
type rowError struct {
	line   int
	reason string
	raw    string
}

// formatOf decides the format of a file name.
func (m *mapping) formatOf(name string) (string, error) {
	if m.format != "" {
		return m.format, nil
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv", ".txt":
		return "csv", nil
	case ".json", ".jsonl", ".ndjson":
		return "json", nil
	}
	return "", fmt.Errorf("cannot tell the format of %q from its extension; set format: csv or json", name)
}

// parse reads a file's rows. A file-level problem (e.g. a missing header
// column) is returned as err; row-level problems as rowErrors.
func (m *mapping) parse(name string, data []byte) ([]row, []rowError, error) {
	format, err := m.formatOf(name)
	if err != nil {
		return nil, nil, err
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a BOM from spreadsheet exports
	lines := strings.Split(string(data), "\n")
	rawLine := func(n int) string {
		if n >= 1 && n <= len(lines) {
			return strings.TrimRight(lines[n-1], "\r")
		}
		return ""
	}
	if format == "csv" {
		return m.parseCSV(data, rawLine)
	}
	return m.parseJSON(data, rawLine)
}

func (m *mapping) columns() []string {
	cols := append([]string(nil), m.cfg.IDColumns...)
	for _, f := range m.fields {
		cols = append(cols, f.column)
	}
	if m.cfg.OccurredAtColumn != "" {
		cols = append(cols, m.cfg.OccurredAtColumn)
	}
	for _, k := range sortedKeys(m.cfg.Attributes) {
		cols = append(cols, m.cfg.Attributes[k])
	}
	return cols
}

func (m *mapping) parseCSV(data []byte, rawLine func(int) string) ([]row, []rowError, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.Comma = m.delim
	r.FieldsPerRecord = 0
	r.ReuseRecord = false
	header, err := r.Read()
	if err == io.EOF {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("header: %v", err)
	}
	index := map[string]int{}
	for i, h := range header {
		index[strings.TrimSpace(h)] = i
	}
	var missing []string
	for _, c := range m.columns() {
		if _, ok := index[c]; !ok && !slices.Contains(missing, strconv.Quote(c)) {
			missing = append(missing, strconv.Quote(c))
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("line 1: the header (%s) lacks the column(s) %s", strings.Join(header, string(m.delim)), strings.Join(missing, ", "))
	}
	var rows []row
	var bad []rowError
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line, _ := r.FieldPos(0)
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			if pe.Line > 0 {
				line = pe.StartLine
			}
			reason := pe.Err.Error()
			if errors.Is(pe.Err, csv.ErrFieldCount) {
				reason = fmt.Sprintf("%d fields, the header has %d", len(rec), len(header))
			}
			bad = append(bad, rowError{line: line, reason: reason, raw: rawLine(line)})
			continue
		}
		if err != nil {
			return rows, bad, err
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		values := make(map[string]string, len(index))
		for name, i := range index {
			if i < len(rec) {
				values[name] = strings.TrimSpace(rec[i])
			}
		}
		rows = append(rows, row{line: line, values: values, raw: rawLine(line)})
	}
	return rows, bad, nil
}

func (m *mapping) parseJSON(data []byte, rawLine func(int) string) ([]row, []rowError, error) {
	// lineAt counts on from the last offset asked for (offsets only grow),
	// so a large array is not counted from its start for every element.
	lastOff, lastLine := 0, 1
	lineAt := func(off int64) int {
		o := min(int(off), len(data))
		if o < lastOff {
			return bytes.Count(data[:o], []byte("\n")) + 1
		}
		lastLine += bytes.Count(data[lastOff:o], []byte("\n"))
		lastOff = o
		return lastLine
	}
	cols := m.columns()
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, nil, nil
	}
	var rows []row
	var bad []rowError
	add := func(line int, raw json.RawMessage) {
		var obj map[string]any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&obj); err != nil || obj == nil {
			reason := "not a JSON object"
			if err != nil {
				reason = err.Error()
			}
			bad = append(bad, rowError{line: line, reason: reason, raw: rawLine(line)})
			return
		}
		values := map[string]string{}
		for _, c := range cols {
			if v, ok := lookupJSON(obj, c); ok {
				values[c] = v
			}
		}
		rows = append(rows, row{line: line, values: values, raw: rawLine(line)})
	}
	if trimmed[0] == '[' {
		dec := json.NewDecoder(bytes.NewReader(data))
		if _, err := dec.Token(); err != nil {
			return nil, nil, err
		}
		for dec.More() {
			// The element starts after the separator the offset points at.
			start := dec.InputOffset()
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return rows, bad, fmt.Errorf("line %d: %v; the rest of the array cannot be read", lineAt(start), err)
			}
			off := start + int64(len(data[start:])-len(bytes.TrimLeft(data[start:], " \t\r\n,")))
			add(lineAt(off), raw)
		}
		return rows, bad, nil
	}
	// One JSON object per line.
	for i, l := range bytes.Split(data, []byte("\n")) {
		l = bytes.TrimSpace(l)
		if len(l) == 0 {
			continue
		}
		add(i+1, json.RawMessage(l))
	}
	return rows, bad, nil
}

// lookupJSON finds a dotted key in a decoded object and renders scalars as
// text (numbers exactly as written).
func lookupJSON(obj map[string]any, key string) (string, bool) {
	var v any = obj
	for _, p := range strings.Split(key, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = o[p]; !ok {
			return "", false
		}
	}
	switch x := v.(type) {
	case nil:
		return "", true
	case string:
		return strings.TrimSpace(x), true
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	}
	raw, _ := json.Marshal(v)
	return string(raw), true
}

// canonicalDecimal writes a number as spreadsheets export it in the form
// the hub reads (hub/decimal): "+5" as "5", "5." as "5", ".5" as "0.5",
// "-.5" as "-0.5". What the hub would refuse (exponents, separators, more
// than decimal.MaxDigits digits or decimal.MaxScale decimals) is refused
// here, with the row, instead of as a rejected event at the hub.
func canonicalDecimal(v string) (string, error) {
	sign, body := "", v
	switch {
	case strings.HasPrefix(body, "+"):
		body = body[1:]
	case strings.HasPrefix(body, "-"):
		sign, body = "-", body[1:]
	}
	if strings.HasPrefix(body, "+") || strings.HasPrefix(body, "-") {
		return "", fmt.Errorf("%q is not a decimal number", v)
	}
	if body != "." {
		body = strings.TrimSuffix(body, ".")
		if strings.HasPrefix(body, ".") {
			body = "0" + body
		}
	}
	if _, err := decimal.Parse(sign + body); err != nil {
		if errors.Is(err, decimal.ErrRange) {
			return "", fmt.Errorf("%q has more than %d digits or %d decimals", v, decimal.MaxDigits, decimal.MaxScale)
		}
		return "", fmt.Errorf("%q is not a decimal number", v)
	}
	return sign + body, nil
}

var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", time.DateOnly}

func (m *mapping) parseTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.ParseInLocation(l, s, m.loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a date or time; want e.g. 2026-12-01 or 2026-12-01T06:00:00Z", s)
}

// event builds the event of one row. The agent sets id, plant and source
// name; the row's id is returned for the record.
func (m *mapping) event(fileName string, r row, now time.Time) (string, *pb.Event, error) {
	id := ""
	if len(m.cfg.IDColumns) == 0 {
		id = fmt.Sprintf("%s:%d", fileName, r.line)
	} else {
		parts := make([]string, len(m.cfg.IDColumns))
		for i, c := range m.cfg.IDColumns {
			if r.values[c] == "" {
				return "", nil, fmt.Errorf("column %s: the row id is empty", c)
			}
			parts[i] = r.values[c]
		}
		id = strings.Join(parts, "/")
	}
	ev := &pb.Event{Type: m.cfg.EventType, SchemaVersion: 1, ObservedAt: timestamppb.New(now),
		Source:     &pb.Source{Uri: fmt.Sprintf("file:%s#line=%d", fileName, r.line)},
		Attributes: map[string]string{"file": fileName, "line": strconv.Itoa(r.line), "row_id": id}}
	occurred := now
	if c := m.cfg.OccurredAtColumn; c != "" && r.values[c] != "" {
		t, err := m.parseTime(r.values[c])
		if err != nil {
			return "", nil, fmt.Errorf("column %s: %v", c, err)
		}
		occurred = t
	}
	ev.OccurredAt = timestamppb.New(occurred)
	for k, col := range m.cfg.Attributes {
		if v := r.values[col]; v != "" {
			ev.Attributes[k] = v
		}
	}
	msg := ev.ProtoReflect().Mutable(m.payload).Message()
	for _, f := range m.fields {
		v, ok := r.values[f.column]
		if !ok || v == "" {
			continue
		}
		if err := m.set(msg, f, v); err != nil {
			return "", nil, fmt.Errorf("column %s (%s): %v", f.column, f.name, err)
		}
	}
	return m.cfg.EventType + "|" + id, ev, nil
}

func (m *mapping) set(msg protoreflect.Message, f fieldMap, v string) error {
	for _, fd := range f.path[:len(f.path)-1] {
		msg = msg.Mutable(fd).Message()
	}
	fd := f.path[len(f.path)-1]
	if fd.Kind() == protoreflect.MessageKind {
		t, err := m.parseTime(v)
		if err != nil {
			return err
		}
		msg.Set(fd, protoreflect.ValueOfMessage(timestamppb.New(t).ProtoReflect()))
		return nil
	}
	var val protoreflect.Value
	switch fd.Kind() {
	case protoreflect.StringKind:
		if isDecimal(msg.Descriptor(), fd) {
			if m.cfg.DecimalComma {
				v = strings.ReplaceAll(strings.ReplaceAll(v, ".", ""), ",", ".")
			}
			d, err := canonicalDecimal(v)
			if err != nil {
				return err
			}
			v = d
		}
		val = protoreflect.ValueOfString(v)
	case protoreflect.BoolKind:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		val = protoreflect.ValueOfBool(b)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		val = protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		val = protoreflect.ValueOfInt64(n)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		val = protoreflect.ValueOfUint32(uint32(n))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		val = protoreflect.ValueOfUint64(n)
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		val = protoreflect.ValueOfFloat64(x)
		if fd.Kind() == protoreflect.FloatKind {
			val = protoreflect.ValueOfFloat32(float32(x))
		}
	default:
		return fmt.Errorf("field kind %s is not supported", fd.Kind())
	}
	msg.Set(fd, val)
	return nil
}

// isDecimal reports whether a string field carries a decimal number (a
// Quantity's value, an Observation's decimal_value).
func isDecimal(md protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor) bool {
	switch {
	case md.FullName() == (&pb.Quantity{}).ProtoReflect().Descriptor().FullName() && fd.Name() == "value":
		return true
	case fd.Name() == "decimal_value":
		return true
	}
	return false
}
