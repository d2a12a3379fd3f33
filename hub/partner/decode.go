package partner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// ErrBody marks a request body that is not one event or a batch of them.
var ErrBody = errors.New("request body")

// idNamespace scopes derived event ids to partner ids.
var idNamespace = uuid.MustParse("7ca46e1f-1929-4ae6-8196-0d23cb92026b")

// EventID derives the event id of a partner's event from the partner's
// name and its own id of the event, so a resent event keeps its id.
func EventID(partner, id string) string {
	return uuid.NewSHA1(idNamespace, []byte(partner+"\x00"+id)).String()
}

// Producer is the journal producer of a partner.
func Producer(name string) string { return "partner:" + name }

// AttrPartnerID is the attribute that keeps the partner's own id of an
// event; the envelope id is derived from it.
const AttrPartnerID = "partner_event_id"

// SourceKind is Event.source.kind of partner events.
const SourceKind = "partner"

const maxIDLen = 256

// FieldError is one problem with one field of a posted event. Field is the
// path as posted (supplier_confirmation.lines[0].quantity.value); empty
// when the problem is with the event as a whole.
type FieldError struct {
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

// splitBody reads a request body: one event (a JSON object), a JSON array
// of events, or {"events": [...]}. It returns each event's raw JSON.
func splitBody(raw []byte) ([]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, fmt.Errorf(`%w: empty; want one event as a JSON object, or a batch as {"events": [...]}`, ErrBody)
	}
	var events []json.RawMessage
	switch raw[0] {
	case '[':
		if err := json.Unmarshal(raw, &events); err != nil {
			return nil, syntaxError(err)
		}
	case '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil {
			return nil, syntaxError(err)
		}
		batch, ok := obj["events"]
		if !ok {
			return []json.RawMessage{raw}, nil
		}
		if len(obj) > 1 {
			var other []string
			for k := range obj {
				if k != "events" {
					other = append(other, strconv.Quote(k))
				}
			}
			return nil, fmt.Errorf(`%w: a batch object holds only "events", found also %s; remove them or send one event without "events"`, ErrBody, strings.Join(slices.Sorted(slices.Values(other)), ", "))
		}
		if b := bytes.TrimSpace(batch); len(b) == 0 || b[0] != '[' {
			return nil, fmt.Errorf(`%w: events: want a JSON array of events, e.g. {"events": [{...}, {...}]}`, ErrBody)
		}
		if err := json.Unmarshal(batch, &events); err != nil {
			return nil, syntaxError(err)
		}
	default:
		if !json.Valid(raw) {
			return nil, syntaxError(json.Unmarshal(raw, new(any)))
		}
		return nil, fmt.Errorf(`%w: want one event as a JSON object, or a batch as {"events": [...]}`, ErrBody)
	}
	if len(events) == 0 {
		return nil, fmt.Errorf(`%w: the batch holds no events; send at least one`, ErrBody)
	}
	return events, nil
}

func syntaxError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%w: invalid JSON at byte offset %d: %v", ErrBody, se.Offset, se)
	}
	return fmt.Errorf("%w: %v", ErrBody, err)
}

// partnerID reads the id an event carries, as far as it can be read, so
// that even an event that does not decode is answered with its id.
func partnerID(raw json.RawMessage) string {
	var head struct {
		ID any `json:"id"`
	}
	if json.Unmarshal(raw, &head) != nil {
		return ""
	}
	s, _ := head.ID.(string)
	return s
}

// decodeEvent decodes one posted event strictly and checks what the
// partner must and must not set. The returned event is nil when it does not
// decode.
func decodeEvent(raw json.RawMessage) (*pb.Event, []FieldError) {
	if b := bytes.TrimSpace(raw); len(b) == 0 || b[0] != '{' {
		return nil, []FieldError{{Reason: "not a JSON object; want an event such as {\"id\": \"CONF-4711\", \"type\": \"supplier.confirmation\", ...}"}}
	}
	ev := &pb.Event{}
	if err := protojson.Unmarshal(raw, ev); err != nil {
		return nil, []FieldError{protoError(raw, err)}
	}
	var errs []FieldError
	// The hub owns these: the journal numbers nothing per partner, and
	// source and observed_at say how and when the hub received the event.
	if ev.GetSequence() != 0 {
		errs = append(errs, FieldError{"sequence", "set by the hub; leave it out"})
	}
	if ev.Source != nil {
		errs = append(errs, FieldError{"source", "set by the hub; leave it out"})
	}
	if ev.ObservedAt != nil {
		errs = append(errs, FieldError{"observed_at", "set by the hub when it receives the event; leave it out (occurred_at is when it happened)"})
	}
	if _, ok := ev.GetAttributes()[AttrPartnerID]; ok {
		errs = append(errs, FieldError{"attributes." + AttrPartnerID, "set by the hub from id; leave it out"})
	}
	switch id := ev.GetId(); {
	case strings.TrimSpace(id) == "":
		errs = append(errs, FieldError{"id", "missing; want your own id of this event, e.g. the document number with its revision (CONF-4711-2); a resent event must carry the same id"})
	case len(id) > maxIDLen:
		errs = append(errs, FieldError{"id", fmt.Sprintf("%d bytes long; want at most %d", len(id), maxIDLen)})
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		errs = append(errs, FieldError{"id", "contains control characters; want printable text"})
	}
	return ev, errs
}

// protoPos finds the position in protojson's messages, which are
// deliberately unstable apart from it: "proto: (line 1:11): unknown field".
var protoPos = regexp.MustCompile(`\(line (\d+):(\d+)\):\s*`)

// protoError turns a protojson error into the field at its position.
func protoError(raw []byte, err error) FieldError {
	msg := err.Error()
	m := protoPos.FindStringSubmatchIndex(msg)
	if m == nil {
		_, rest, _ := strings.Cut(msg, ":")
		return FieldError{Reason: strings.TrimSpace(rest)}
	}
	line, _ := strconv.Atoi(msg[m[2]:m[3]])
	col, _ := strconv.Atoi(msg[m[4]:m[5]])
	reason := msg[m[1]:]
	if strings.Contains(msg[:m[0]], "syntax error") {
		reason = "invalid JSON: " + reason
	}
	off := offsetOf(raw, line, col)
	return FieldError{Field: jsonPath(raw, off), Reason: reason + fmt.Sprintf(" (byte offset %d of the event)", off)}
}

// offsetOf converts protojson's 1-based line and column (in runes) into a
// byte offset of raw.
func offsetOf(raw []byte, line, col int) int {
	l, c := 1, 1
	for i := 0; i < len(raw); {
		if l == line && c == col {
			return i
		}
		r, n := utf8.DecodeRune(raw[i:])
		if r == '\n' {
			l, c = l+1, 1
		} else {
			c++
		}
		i += n
	}
	return len(raw)
}

// jsonPath returns the path (a.b[2].c) of the key or value that covers
// byte offset off of raw; as far as it got when raw is not valid JSON.
func jsonPath(raw []byte, off int) string {
	type frame struct {
		object  bool
		wantKey bool
		key     string
		index   int
	}
	var stack []frame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			switch {
			case f.object && f.key != "":
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			case !f.object:
				fmt.Fprintf(&b, "[%d]", f.index)
			}
		}
		return b.String()
	}
	done := func() { // a value ended: the enclosing container moves on
		if n := len(stack); n > 0 {
			if stack[n-1].object {
				stack[n-1].wantKey = true
			} else {
				stack[n-1].index++
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return path()
		}
		var top *frame
		if n := len(stack); n > 0 {
			top = &stack[n-1]
		}
		s, isString := tok.(string)
		isKey := isString && top != nil && top.object && top.wantKey
		if isKey {
			top.key, top.wantKey = s, false
		}
		if int(dec.InputOffset()) > off {
			if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') && top != nil && top.object {
				top.key = "" // the end of an object is the object itself
			}
			return path()
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{object: true, wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			done()
		default:
			if !isKey {
				done()
			}
		}
	}
}
