package opcua

import (
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"google.golang.org/protobuf/proto"
)

// FuzzDataValueToEvent builds server values of every OPC UA built-in
// type, scalar, array, nested and broken (invalid UTF-8, NaN, odd
// timestamps and status codes) from the fuzzer's input and runs them
// through every kind of mapping: conversion must never panic, and every
// event must marshal (proto3 strings must be valid UTF-8) and carry an id.
func FuzzDataValueToEvent(f *testing.F) {
	f.Add(uint8(11), int64(7), uint64(3), 71.25, "running", []byte{1, 2}, uint32(0), srcTS.UnixNano(), srvTS.UnixNano(), uint8(0))
	f.Add(uint8(12), int64(-1), uint64(0), math.NaN(), "bad \xff", []byte{}, uint32(0x80340000), int64(0), srvTS.UnixNano(), uint8(3))
	f.Add(uint8(22), int64(1), uint64(1<<63), math.Inf(-1), "", []byte(nil), uint32(0x40000000), int64(-1), int64(0), uint8(2))
	f.Add(uint8(24), int64(1e18), uint64(9), 1e300, "x:y", []byte("0123456789abcdef"), uint32(0x00000400), int64(1<<62), int64(0), uint8(5))
	items := []*item{
		testItem(f, "ns=2;s=A", "observation", map[string]string{"unit": "{raw}"}, nil, nil),
		testItem(f, "ns=2;s=B", "machine.state", map[string]string{"state": "{value}", "machine": "{1}", "reason": "{status} {source_timestamp}"}, map[string]string{"1": "on"}, []string{"M\xff"}),
		testItem(f, "ns=2;s=C", "production.completion", map[string]string{"good": "{value}", "good.unit": "EA", "operation": "{raw}"}, nil, nil),
		testItem(f, "ns=2;s=D", "machine.alarm", map[string]string{"severity": "{value}", "active": "{value}", "message": "{value}"}, nil, nil),
		testItem(f, "ns=2;s=E", "material.shortage", map[string]string{"required_by": "{value}", "quantity": "{value}"}, nil, nil),
	}
	em, err := compileEventMapping("machine.alarm", nil, []string{"X"})
	if err != nil {
		f.Fatal(err)
	}
	alarm := &item{key: "i=2253", src: "line1", uri: "u", kind: kindEvent, em: em}
	f.Fuzz(func(t *testing.T, kind uint8, i int64, u uint64, fl float64, str string, b []byte, status uint32, srcNs, srvNs int64, n uint8) {
		d := ua.DataValue{Status: ua.StatusCode(status), Value: variantOf(kind, i, u, fl, str, b, int(n%8), 0)}
		if srcNs != 0 {
			d.SourceTimestamp = time.Unix(0, srcNs)
		}
		if srvNs != 0 {
			d.ServerTimestamp = time.Unix(0, srvNs)
		}
		for _, it := range items {
			ev, lv := buildValueEvent(it, &d, "DE-01", testEndpoint, now)
			check(t, ev.GetId(), ev)
			if lv.id != ev.GetId() {
				t.Fatal("id mismatch")
			}
		}
		// The same value as every field of an event notification.
		fields := make([]*ua.Variant, len(em.selects))
		for i := range fields {
			fields[i] = d.Value
		}
		ev := buildAlarmEvent(alarm, fields, "DE-01", testEndpoint, now)
		check(t, ev.GetId(), ev)
		if _, ok := numeric(d.Value); ok {
			var s Source
			it := &item{opts: ItemOptions{Deadband: Deadband{Type: DeadbandAbsolute, Value: 1}}}
			s.passDeadband(it, &d)
			s.passDeadband(it, &d)
		}
	})
}

// variantOf makes a variant of built-in type kind (an array of n when n > 0;
// nested Variants and DataValues recurse).
func variantOf(kind uint8, i int64, u uint64, fl float64, str string, b []byte, n, depth int) *ua.Variant {
	scalar := func() any {
		switch ua.TypeID(kind % 26) {
		case ua.TypeIDBoolean:
			return i%2 == 0
		case ua.TypeIDSByte:
			return int8(i)
		case ua.TypeIDByte:
			return uint8(u)
		case ua.TypeIDInt16:
			return int16(i)
		case ua.TypeIDUint16:
			return uint16(u)
		case ua.TypeIDInt32:
			return int32(i)
		case ua.TypeIDUint32:
			return uint32(u)
		case ua.TypeIDInt64:
			return i
		case ua.TypeIDUint64:
			return u
		case ua.TypeIDFloat:
			return float32(fl)
		case ua.TypeIDDouble:
			return fl
		case ua.TypeIDString:
			return str
		case ua.TypeIDDateTime:
			return time.Unix(0, i)
		case ua.TypeIDGUID:
			g := make([]byte, 16)
			copy(g, b)
			return ua.NewGUID(fmt.Sprintf("%x-%x-%x-%x-%x", g[0:4], g[4:6], g[6:8], g[8:10], g[10:16]))
		case ua.TypeIDByteString:
			return b
		case ua.TypeIDXMLElement:
			return ua.XMLElement(str)
		case ua.TypeIDNodeID:
			return ua.NewStringNodeID(uint16(u), str)
		case ua.TypeIDExpandedNodeID:
			return ua.NewExpandedNodeID(ua.NewNumericNodeID(uint16(u), uint32(i)), str, uint32(u))
		case ua.TypeIDStatusCode:
			return ua.StatusCode(u)
		case ua.TypeIDQualifiedName:
			return &ua.QualifiedName{NamespaceIndex: uint16(u), Name: str}
		case ua.TypeIDLocalizedText:
			return &ua.LocalizedText{EncodingMask: ua.LocalizedTextText | ua.LocalizedTextLocale, Text: str, Locale: string(b)}
		case ua.TypeIDExtensionObject:
			return ua.NewExtensionObject(&ua.Range{Low: fl, High: float64(i)})
		case ua.TypeIDDataValue:
			if depth > 3 {
				return nil
			}
			return &ua.DataValue{Value: variantOf(kind+1, i, u, fl, str, b, 0, depth+1), Status: ua.StatusCode(u)}
		case ua.TypeIDVariant:
			if depth > 3 {
				return nil
			}
			return variantOf(kind+3, i, u, fl, str, b, n, depth+1)
		case ua.TypeIDDiagnosticInfo:
			return &ua.DiagnosticInfo{SymbolicID: int32(i), AdditionalInfo: str}
		}
		return nil
	}
	v := scalar()
	if v == nil {
		return nil
	}
	if n > 0 {
		if _, ok := v.([]byte); !ok {
			rv := reflect.MakeSlice(reflect.SliceOf(reflect.TypeOf(v)), n, n)
			for j := 0; j < n; j++ {
				rv.Index(j).Set(reflect.ValueOf(v))
			}
			v = rv.Interface()
		}
	}
	if vv, ok := v.(*ua.Variant); ok {
		return vv
	}
	out, err := ua.NewVariant(v)
	if err != nil {
		return nil
	}
	return out
}

func check(t *testing.T, id string, ev proto.Message) {
	t.Helper()
	if id == "" {
		t.Fatal("event without id")
	}
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatalf("event does not marshal: %v", err)
	}
	if len(b) == 0 {
		t.Fatal("empty event")
	}
}
