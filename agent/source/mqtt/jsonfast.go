package mqtt

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// Decoding a 150-byte MES message into map[string]any with encoding/json
// costs about 1.5 µs and 29 allocations; the fast path below about 0.52 µs
// and none (BenchmarkDecodePayload, median of 3 on the 2-core build
// machine). Most subscriptions read a handful of paths and no CEL:
// for those, mapPayload validates the payload with encoding/json's own
// scanner (json.Valid: the same documents are accepted and refused) and
// reads the paths from a fastjson parse, converting only the values it
// returns. Everything else, and every payload the fast path could read
// differently (escapes, invalid UTF-8, a top level that is not an object,
// nesting fastjson refuses), takes the encoding/json path, which also words
// the errors. FuzzJSONFastPath holds the two paths to the same results.

var fastParsers fastjson.ParserPool

// mapPayload decodes and maps one JSON (or text, number) payload.
func (cs *compiledSub) mapPayload(payload []byte, topic string, caps map[string]string) (*mapped, *mapError) {
	if v, p := cs.fastDecode(payload); v != nil {
		defer fastParsers.Put(p)
		return cs.mapDoc(v, topic, caps)
	}
	doc, merr := cs.decodePayload(payload)
	if merr != nil {
		return nil, merr
	}
	return cs.mapDoc(doc, topic, caps)
}

// fastDecode parses payload for the fast path, or returns nil when the
// payload or the subscription needs encoding/json. The caller puts the
// parser back once it is done with the value.
func (cs *compiledSub) fastDecode(payload []byte) (*fastjson.Value, *fastjson.Parser) {
	if cs.format != FormatJSON || cs.usesCEL || len(payload) > maxPayload ||
		bytes.IndexByte(payload, '\\') >= 0 || !utf8.Valid(payload) || !json.Valid(payload) {
		return nil, nil
	}
	p := fastParsers.Get()
	v, err := p.ParseBytes(payload)
	if err != nil || v.Type() != fastjson.TypeObject {
		fastParsers.Put(p)
		return nil, nil
	}
	return v, p
}

// lookupFast is lookup on a fastjson document. A repeated key yields its
// last value, as encoding/json's does.
func (p jsonPath) lookupFast(v *fastjson.Value) (any, bool) {
	cur := v
	for _, st := range p {
		if st.index < 0 {
			o, err := cur.Object()
			if err != nil {
				return nil, false
			}
			var found *fastjson.Value
			o.Visit(func(k []byte, e *fastjson.Value) {
				if string(k) == st.key {
					found = e
				}
			})
			if found == nil {
				return nil, false
			}
			cur = found
			continue
		}
		a, err := cur.Array()
		if err != nil || st.index >= len(a) {
			return nil, false
		}
		cur = a[st.index]
	}
	return fromFast(cur), true
}

// fromFast converts a value to what encoding/json with UseNumber makes of
// it; strings are copied out of the payload. The fast path only takes
// payloads without escapes and with valid UTF-8, so a string's bytes are
// its value.
func fromFast(v *fastjson.Value) any {
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		return string(b)
	case fastjson.TypeNumber:
		return json.Number(v.MarshalTo(nil))
	case fastjson.TypeTrue:
		return true
	case fastjson.TypeFalse:
		return false
	case fastjson.TypeObject:
		o, _ := v.Object()
		m := make(map[string]any, o.Len())
		o.Visit(func(k []byte, e *fastjson.Value) { m[string(k)] = fromFast(e) })
		return m
	case fastjson.TypeArray:
		a, _ := v.Array()
		l := make([]any, len(a))
		for i, e := range a {
			l[i] = fromFast(e)
		}
		return l
	}
	return nil
}
