package opcua

import (
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/ua"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const testEndpoint = "opc.tcp://10.0.0.5:4840"

var (
	srcTS = time.Date(2026, 5, 4, 8, 30, 0, 123000000, time.UTC)
	srvTS = time.Date(2026, 5, 4, 8, 30, 0, 456000000, time.UTC)
	now   = time.Date(2026, 5, 4, 8, 30, 1, 0, time.UTC)
)

func dv(v any, status ua.StatusCode, source, server time.Time) *ua.DataValue {
	d := &ua.DataValue{Status: status, SourceTimestamp: source, ServerTimestamp: server}
	if v != nil {
		d.Value = ua.MustVariant(v)
	}
	return d
}

func testItem(t testing.TB, key, eventType string, fields, valueMap map[string]string, caps []string) *item {
	t.Helper()
	m, err := compileMapping(eventType, fields, valueMap, len(caps))
	if err != nil {
		t.Fatal(err)
	}
	return &item{key: key, src: "line1", uri: testEndpoint + "#" + key, m: m, caps: caps, name: "State", path: "Objects/Line1/Press3/State"}
}

// The mapping of values to canonical events, against golden files
// (go test -run TestValueMappingGolden -update rewrites them).
func TestValueMappingGolden(t *testing.T) {
	cases := []struct {
		name string
		it   *item
		dv   *ua.DataValue
	}{
		{"observation_double", testItem(t, "ns=2;s=Press3.Temp", "observation", map[string]string{"unit": "Cel"}, nil, nil),
			dv(71.25, ua.StatusOK, srcTS, srvTS)},
		{"observation_int_array", testItem(t, "ns=2;s=Press3.Zones", "observation", nil, nil, nil),
			dv([]int32{1, -2, 3}, ua.StatusOK, srcTS, srvTS)},
		{"observation_uncertain_float", testItem(t, "ns=2;s=Press3.Flow", "observation", nil, nil, nil),
			dv(float32(0.1), 0x40000000, srcTS, srvTS)},
		{"observation_bad_no_value", testItem(t, "ns=2;s=Gone", "observation", nil, nil, nil),
			dv(nil, ua.StatusBadNodeIDUnknown, time.Time{}, srvTS)},
		{"observation_localized_text", testItem(t, "ns=2;s=Press3.Message", "observation", nil, nil, nil),
			dv(&ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: "Tür offen"}, ua.StatusOK, srcTS, srvTS)},
		{"observation_datetime", testItem(t, "ns=2;s=Press3.LastService", "observation", nil, nil, nil),
			dv(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), ua.StatusOK, srcTS, srvTS)},
		{"machine_state_value_map_and_capture", testItem(t, "ns=2;s=Line1.Press3.State", "machine.state",
			map[string]string{"work_center": "L1", "machine": "{1}", "state": "{value}", "reason": "raw {raw} at {path}"},
			map[string]string{"1": "running"}, []string{"Press3"}),
			dv(int32(1), ua.StatusOK, srcTS, srvTS)},
		{"machine_state_bad_quality", testItem(t, "ns=2;s=Line1.Press3.State", "machine.state",
			map[string]string{"machine": "Press3", "state": "{value}"}, nil, nil),
			dv(nil, ua.StatusBadCommunicationError, time.Time{}, srvTS)},
		{"production_completion_quantity", testItem(t, "ns=2;s=Press3.Good", "production.completion",
			map[string]string{"work_center": "L1-P3", "item": "P-4711", "good": "{value}", "good.unit": "EA"}, nil, nil),
			dv(uint32(12), ua.StatusOK, srcTS, srvTS)},
		{"production_completion_not_a_decimal", testItem(t, "ns=2;s=Press3.Good", "production.completion",
			map[string]string{"good": "{value}"}, nil, nil),
			dv("twelve", ua.StatusOK, srcTS, srvTS)},
		{"machine_alarm_from_boolean", testItem(t, "ns=2;s=Press3.DoorOpen", "machine.alarm",
			map[string]string{"machine": "Press3", "alarm_id": "door", "active": "{value}", "severity": "700"}, nil, nil),
			dv(true, ua.StatusOK, srcTS, srvTS)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, lv := buildValueEvent(c.it, c.dv, "DE-01", testEndpoint, now)
			if ev.GetId() != lv.id || ev.GetId() == "" {
				t.Fatalf("id %q vs %q", ev.GetId(), lv.id)
			}
			if _, err := proto.Marshal(ev); err != nil {
				t.Fatalf("event does not marshal: %v", err)
			}
			golden(t, c.name, ev)
		})
	}
}

func golden(t *testing.T, name string, ev *pb.Event) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".json")
	if *update {
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	var want pb.Event
	if err := protojson.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&want, ev) {
		got, _ := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(ev)
		t.Fatalf("event differs from %s:\n%s", path, got)
	}
}

// Identity is born once: the same value of the same node at the same
// source time yields the same id; any difference yields another.
func TestEventIDDeterministic(t *testing.T) {
	it := testItem(t, "ns=2;s=A", "observation", nil, nil, nil)
	a, _ := buildValueEvent(it, dv(1.5, 0, srcTS, srvTS), "DE-01", testEndpoint, now)
	b, _ := buildValueEvent(it, dv(1.5, 0, srcTS, srvTS.Add(time.Second)), "DE-01", testEndpoint, now.Add(time.Minute))
	if a.GetId() != b.GetId() {
		t.Fatal("a redelivered value (other server time, other observation time) got another id")
	}
	// History info bits (0x400 = raw) do not change the identity.
	h, _ := buildValueEvent(it, dv(1.5, 0x400, srcTS, srvTS), "DE-01", testEndpoint, now)
	if h.GetId() != a.GetId() {
		t.Fatal("info bits changed the id")
	}
	for name, d := range map[string]*ua.DataValue{
		"value":  dv(1.6, 0, srcTS, srvTS),
		"time":   dv(1.5, 0, srcTS.Add(time.Millisecond), srvTS),
		"status": dv(1.5, 0x40000000, srcTS, srvTS),
	} {
		c, _ := buildValueEvent(it, d, "DE-01", testEndpoint, now)
		if c.GetId() == a.GetId() {
			t.Errorf("another %s gave the same id", name)
		}
	}
	other, _ := buildValueEvent(it, dv(1.5, 0, srcTS, srvTS), "PL-02", testEndpoint, now)
	if other.GetId() == a.GetId() {
		t.Error("another plant gave the same id")
	}
	// Without a source timestamp the server's counts.
	s1, _ := buildValueEvent(it, dv(1.5, 0, time.Time{}, srvTS), "DE-01", testEndpoint, now)
	s2, _ := buildValueEvent(it, dv(1.5, 0, time.Time{}, srvTS), "DE-01", testEndpoint, now.Add(time.Hour))
	if s1.GetId() != s2.GetId() || !s1.GetOccurredAt().AsTime().Equal(srvTS) {
		t.Error("the server timestamp does not stand in for a missing source timestamp")
	}
	// Without any timestamp every value is new.
	n1, _ := buildValueEvent(it, dv(1.5, 0, time.Time{}, time.Time{}), "DE-01", testEndpoint, now)
	n2, _ := buildValueEvent(it, dv(1.5, 0, time.Time{}, time.Time{}), "DE-01", testEndpoint, now)
	if n1.GetId() == n2.GetId() || n1.GetId() == "" {
		t.Error("values without timestamps must get new ids")
	}
	if !n1.GetOccurredAt().AsTime().Equal(now) {
		t.Error("a value without timestamps occurred when it was observed")
	}
}

func TestAlarmMappingGolden(t *testing.T) {
	em, err := compileEventMapping("machine.alarm", map[string]string{"work_center": "L1", "message": "{Message} ({Machine/Code})"}, []string{"Machine/Code"})
	if err != nil {
		t.Fatal(err)
	}
	it := &item{key: "i=2253", src: "line1", uri: testEndpoint + "#i=2253", kind: kindEvent, em: em}
	fields := []*ua.Variant{
		ua.MustVariant([]byte{1, 2, 3, 4}),              // EventId
		ua.MustVariant(ua.NewNumericNodeID(0, 2915)),    // EventType
		ua.MustVariant(ua.NewStringNodeID(2, "Press3")), // SourceNode
		ua.MustVariant("Press3"),                        // SourceName
		ua.MustVariant(srcTS),                           // Time
		ua.MustVariant(srvTS),                           // ReceiveTime
		ua.MustVariant(&ua.LocalizedText{EncodingMask: ua.LocalizedTextText, Text: "Oil pressure low"}), // Message
		ua.MustVariant(uint16(800)),                                      // Severity
		ua.MustVariant(ua.NewStringNodeID(2, "Press3.OilPressureAlarm")), // ConditionId
		ua.MustVariant("OilPressureLow"),                                 // ConditionName
		ua.MustVariant(true),                                             // Retain
		ua.MustVariant(true),                                             // ActiveState/Id
		ua.MustVariant(false),                                            // AckedState/Id
		ua.MustVariant("E-17"),                                           // Machine/Code
	}
	ev := buildAlarmEvent(it, fields, "DE-01", testEndpoint, now)
	golden(t, "machine_alarm_event", ev)
	again := buildAlarmEvent(it, fields, "DE-01", testEndpoint, now.Add(time.Minute))
	if again.GetId() != ev.GetId() {
		t.Fatal("the same EventId must give the same event id")
	}
	// A plain event (no condition fields) still maps.
	plain := append([]*ua.Variant(nil), fields[:8]...)
	plain = append(plain, nil, nil, nil, nil, nil, nil)
	pe := buildAlarmEvent(it, plain, "DE-01", testEndpoint, now)
	if pe.GetType() != "machine.alarm" || pe.GetMachineAlarm().GetAlarmId() != "ns=2;s=Press3" {
		t.Fatalf("plain event = %v", pe)
	}
}

func TestVariantTextForms(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
		typ  string
	}{
		{float32(0.1), "0.1", "Float"},
		{1e21, "1000000000000000000000", "Double"},
		{math.NaN(), "NaN", "Double"},
		{[]float64{1.5, math.Inf(1)}, `[1.5,"+Inf"]`, "Double[]"},
		{"bad \xff utf8", "bad \uFFFD utf8", "String"},
		{[]byte("hi"), "aGk=", "ByteString"},
		{ua.StatusBadNodeIDUnknown, "BadNodeIdUnknown", "StatusCode"},
		{&ua.QualifiedName{NamespaceIndex: 2, Name: "X"}, "2:X", "QualifiedName"},
		{[][]int32{{1, 2}, {3, 4}}, "[[1,2],[3,4]]", "Int32[]"},
	} {
		var obs pb.Observation
		got := setObservation(&obs, ua.MustVariant(c.v))
		if got != c.want || obs.GetDataType() != c.typ {
			t.Errorf("%T %v: text %q type %q; want %q %q", c.v, c.v, got, obs.GetDataType(), c.want, c.typ)
		}
		if _, err := proto.Marshal(&obs); err != nil {
			t.Errorf("%T: %v", c.v, err)
		}
		if strings.ContainsRune(got, '\xff') {
			t.Errorf("invalid UTF-8 leaked")
		}
	}
}
