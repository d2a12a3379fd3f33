package outbox

import (
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
)

// ErrDocument marks an entry whose document is not JSON.
var ErrDocument = errors.New("outbox document is not valid JSON")

// Encode encodes an entry as the outbox stores it: one state byte, then
// the entry as JSON (without Seq, which is the key). It is hand-written
// because it runs for every action on the pipeline's hot path and
// encoding/json re-validates the embedded document; it produces what
// json.Marshal would (TestEncodeMatchesEncodingJSON). The document must be
// valid JSON (the pipeline makes it with json.Marshal); use Validate for
// documents from elsewhere.
func Encode(e *Entry) ([]byte, error) {
	b := make([]byte, 0, 1024+len(e.Document))
	b = append(b, e.State.byte())
	b = append(b, `{"destination":`...)
	b = appendString(b, e.Destination)
	b = append(b, `,"idempotency_key":`...)
	b = appendString(b, e.IdempotencyKey)
	b = append(b, `,"action":`...)
	b = appendString(b, e.Action)
	b = append(b, `,"ordering_key":`...)
	b = appendString(b, e.OrderingKey)
	b = append(b, `,"document":`...)
	if len(e.Document) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Document...)
	}
	b = append(b, `,"created_at":`...)
	b = appendTime(b, e.CreatedAt)
	b = append(b, `,"state":`...)
	b = appendString(b, string(e.State))
	b = append(b, `,"lineage":`...)
	b = appendLineage(b, &e.Lineage)
	if e.Attempts != 0 {
		b = append(b, `,"attempts":`...)
		b = strconv.AppendInt(b, int64(e.Attempts), 10)
	}
	if e.ExternalRef != "" {
		b = append(b, `,"external_ref":`...)
		b = appendString(b, e.ExternalRef)
	}
	if e.CompletedAt != nil {
		b = append(b, `,"completed_at":`...)
		b = appendTime(b, *e.CompletedAt)
	}
	if e.Message != "" {
		b = append(b, `,"message":`...)
		b = appendString(b, e.Message)
	}
	return append(b, '}'), nil
}

// Validate checks an entry's document before Encode.
func Validate(e *Entry) error {
	if len(e.Document) > 0 && !json.Valid(e.Document) {
		return ErrDocument
	}
	return nil
}

func appendLineage(b []byte, l *Lineage) []byte {
	b = append(b, `{"event_id":`...)
	b = appendString(b, l.EventID)
	b = append(b, `,"correlation_id":`...)
	b = appendString(b, l.CorrelationID)
	b = append(b, `,"event_type":`...)
	b = appendString(b, l.EventType)
	b = append(b, `,"plant":`...)
	b = appendString(b, l.Plant)
	if l.Producer != "" {
		b = append(b, `,"producer":`...)
		b = appendString(b, l.Producer)
	}
	b = append(b, `,"journal_position":`...)
	b = strconv.AppendUint(b, l.JournalPosition, 10)
	if l.Rule != "" {
		b = append(b, `,"rule":`...)
		b = appendString(b, l.Rule)
	}
	if len(l.Crosswalks) > 0 {
		keys := make([]string, 0, len(l.Crosswalks))
		for k := range l.Crosswalks {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, `,"crosswalks":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = strconv.AppendUint(b, l.Crosswalks[k], 10)
		}
		b = append(b, '}')
	}
	b = append(b, `,"processed_at":`...)
	b = appendTime(b, l.ProcessedAt)
	if l.Approval != 0 {
		b = append(b, `,"approval":`...)
		b = strconv.AppendUint(b, l.Approval, 10)
	}
	if l.ReplayOf != 0 {
		b = append(b, `,"replay_of":`...)
		b = strconv.AppendUint(b, l.ReplayOf, 10)
	}
	return append(b, '}')
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string the way encoding/json does
// (HTML-safe escapes, invalid UTF-8 as U+FFFD).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
