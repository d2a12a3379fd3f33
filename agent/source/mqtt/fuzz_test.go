package mqtt

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
	spb "github.com/plantsync/plantsync/proto/sparkplug"
)

// fuzzSubscription exercises every kind of mapping at once.
var fuzzSubscription = Subscription{
	Topic: "mes/{plant}/{line}/completion", EventType: "production.completion", IDField: "header.id",
	Fields: map[string]Value{
		"order":       {Path: "header.order"},
		"item":        {CEL: "has(doc.item) ? string(doc.item) : 'none'"},
		"good":        {Path: "lines[0].qty", UnitPath: "lines[0].uom", Unit: "kg"},
		"scrap":       {CEL: "has(raw.scrap) ? dec_mul(raw.scrap, '1') : '0'", Unit: "EA"},
		"work_center": {Capture: "line"},
		"occurred_at": {Path: "ts", Format: "unix_ms", Optional: true},
	},
	Attributes: map[string]Value{"shift": {Path: "shift", Default: "none"}},
	DropIf:     "has(doc.test) && doc.test == true",
}

// FuzzJSONMapper feeds arbitrary payloads to the JSON mapper: it must map
// or explain, never panic, and what it maps must encode.
func FuzzJSONMapper(f *testing.F) {
	ins, _ := filepath.Glob(filepath.Join("testdata", "mapping", "*.in"))
	for _, in := range ins {
		if b, err := os.ReadFile(in); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"header":{"id":"x","order":7},"lines":[{"qty":"1.5e3","uom":"g"}],"scrap":0.25,"ts":1700000000000}`))
	cs, errs := compileSubscription(fuzzSubscription, "fuzz")
	if len(errs) > 0 {
		f.Fatal(errs)
	}
	caps := map[string]string{"plant": "DE-01", "line": "L1"}
	f.Fuzz(func(t *testing.T, payload []byte) {
		doc, merr := cs.decodePayload(payload)
		if merr != nil {
			if merr.Error() == "" {
				t.Fatal("empty decode error")
			}
			return
		}
		m, merr := cs.mapDoc(doc, "mes/DE-01/L1/completion", caps)
		if merr != nil {
			if merr.Error() == "" {
				t.Fatal("empty mapping error")
			}
			return
		}
		if m.dropped {
			return
		}
		if m.msgID == "" {
			t.Fatal("mapped without a message id")
		}
		ev := &pb.Event{Attributes: map[string]string{}}
		cs.schema.build(m.fields, ev)
		for _, q := range []*pb.Quantity{ev.GetProductionCompletion().GetGood(), ev.GetProductionCompletion().GetScrap()} {
			if q != nil && !isPlainDecimal(q.GetValue()) {
				t.Fatalf("quantity %q is not plain decimal text", q.GetValue())
			}
		}
		if _, err := proto.Marshal(ev); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzSparkplugDecode feeds arbitrary payloads, as every Sparkplug message
// type, to the decoder and the host state.
func FuzzSparkplugDecode(f *testing.F) {
	birth, _ := proto.Marshal(&spb.Payload{Seq: proto.Uint64(0), Timestamp: proto.Uint64(1), Metrics: []*spb.Payload_Metric{
		{Name: proto.String("bdSeq"), Datatype: proto.Uint32(4), Value: &spb.Payload_Metric_LongValue{LongValue: 1}},
		{Name: proto.String("T"), Alias: proto.Uint64(1), Datatype: proto.Uint32(9), Value: &spb.Payload_Metric_FloatValue{FloatValue: 1.5}},
		{Name: proto.String("DS"), Alias: proto.Uint64(2), Datatype: proto.Uint32(16), Value: &spb.Payload_Metric_DatasetValue{
			DatasetValue: &spb.Payload_DataSet{NumOfColumns: proto.Uint64(1), Columns: []string{"a"}, Types: []uint32{3}}}},
	}})
	data, _ := proto.Marshal(&spb.Payload{Seq: proto.Uint64(1), Metrics: []*spb.Payload_Metric{{Alias: proto.Uint64(1), Value: &spb.Payload_Metric_FloatValue{FloatValue: 2}}}})
	for i := range spFuzzTopics {
		f.Add(uint8(i), birth)
		f.Add(uint8(i), data)
	}
	f.Add(uint8(0), []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	mk := func(id, typ, topic string, occurred time.Time) *pb.Event {
		return &pb.Event{Id: id, Type: typ, Attributes: map[string]string{}}
	}
	f.Fuzz(func(t *testing.T, which uint8, payload []byte) {
		st := newSparkplugState("spb")
		// A birth first, so data messages exercise alias resolution too.
		if _, err := st.handle("spBv1.0/G/NBIRTH/E", birth, mk, "P", "spb", false); err != nil {
			t.Fatal(err)
		}
		topic := spFuzzTopics[int(which)%len(spFuzzTopics)]
		out, merr := st.handle(topic, payload, mk, "P", "spb", false)
		if merr != nil {
			if merr.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, ev := range out.events {
			if ev.GetId() == "" {
				t.Fatal("event without id")
			}
			if _, err := proto.Marshal(ev); err != nil {
				t.Fatal(err)
			}
		}
		for _, w := range out.state {
			if err := st.load(w.Key, w.Value); err != nil && w.Value != nil {
				t.Fatalf("state written does not load back: %v", err)
			}
		}
	})
}

var spFuzzTopics = []string{
	"spBv1.0/G/NBIRTH/E", "spBv1.0/G/NDATA/E", "spBv1.0/G/DBIRTH/E/D", "spBv1.0/G/DDATA/E/D",
	"spBv1.0/G/NDEATH/E", "spBv1.0/G/DDEATH/E/D", "spBv1.0/G/NCMD/E", "spBv1.0/STATE/h", "spBv1.0/G/NDATA",
}

// fastPathSubscription has no CEL, so the fast JSON path serves it; its
// paths reach into objects and lists, and one names a whole object.
var fastPathSubscription = Subscription{
	Topic: "mes/{plant}/{line}/completion", EventType: "production.completion", IDField: "header.id",
	Fields: map[string]Value{
		"order":       {Path: "header.order"},
		"item":        {Path: "item", Default: "none"},
		"good":        {Path: "lines[0].qty", UnitPath: "lines[0].uom", Unit: "kg"},
		"scrap":       {Path: "lines[1].qty", FromUnit: "g", Unit: "kg", Optional: true},
		"work_center": {Capture: "line"},
		"occurred_at": {Path: "ts", Format: "unix_ms", Optional: true},
	},
	Attributes: map[string]Value{"shift": {Path: "shift", Default: "none"}, "header": {Path: "header", Optional: true}},
}

// FuzzJSONFastPath holds the fast JSON path to encoding/json's: for every
// payload, both map to the same fields, attributes and id, or fail with
// the same error.
func FuzzJSONFastPath(f *testing.F) {
	ins, _ := filepath.Glob(filepath.Join("testdata", "mapping", "*.in"))
	for _, in := range ins {
		if b, err := os.ReadFile(in); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		`{"header":{"id":"x","order":7},"lines":[{"qty":"1.5e3","uom":"g"},{"qty":2}],"ts":1700000000000,"item":"P-1"}`,
		`{"header":{"id":"x","order":"O-1","id":"y"},"lines":[{"qty":-0.5E+2,"uom":"kg"}],"shift":true,"item":null}`,
		`{"header":{"id":"ä€😀","order":[1,{"a":null}]},"lines":[{"qty":"12","uom":"t"}],"shift":{"n":1}}`,
		` {"header":{"id":12,"order":1e400},"lines":[[1]],"item":false} `,
		`{"header":{"id":"x","order":"o"},"lines":[{"qty":"1"}]} trailing`,
		`["not an object"]`,
	} {
		f.Add([]byte(s))
	}
	cs, errs := compileSubscription(fastPathSubscription, "fuzz")
	if len(errs) > 0 {
		f.Fatal(errs)
	}
	caps := map[string]string{"plant": "DE-01", "line": "L1"}
	f.Fuzz(func(t *testing.T, payload []byte) {
		var want *mapped
		doc, wantErr := cs.decodePayload(payload)
		if wantErr == nil {
			want, wantErr = cs.mapDoc(doc, "mes/DE-01/L1/completion", caps)
		}
		got, gotErr := cs.mapPayload(payload, "mes/DE-01/L1/completion", caps)
		switch {
		case (wantErr == nil) != (gotErr == nil):
			t.Fatalf("encoding/json path: %v; fast path: %v", wantErr, gotErr)
		case wantErr != nil:
			if wantErr.Error() != gotErr.Error() {
				t.Fatalf("errors differ:\n encoding/json: %v\n fast path:     %v", wantErr, gotErr)
			}
		case !reflect.DeepEqual(want, got):
			t.Fatalf("results differ:\n encoding/json: %#v\n fast path:     %#v", want, got)
		}
	})
}

// The fast path must serve the plain MES message the source exists for,
// or FuzzJSONFastPath compares encoding/json with itself.
func TestFastPathTakesPlainMESMessages(t *testing.T) {
	cs, errs := compileSubscription(fastPathSubscription, "test")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	v, p := cs.fastDecode([]byte(`{"header":{"id":"x","order":"O-1"},"lines":[{"qty":"12","uom":"kg"}],"ts":1700000000000}`))
	if v == nil {
		t.Fatal("fast path refused a plain MES message")
	}
	fastParsers.Put(p)
	for _, payload := range []string{`{"header":{"id":"a\"b"}}`, "{\"header\":{\"id\":\"\xff\"}}", `[1]`, `{"a":1}x`} {
		if v, _ := cs.fastDecode([]byte(payload)); v != nil {
			t.Errorf("fast path took %q; it must leave it to encoding/json", payload)
		}
	}
}
