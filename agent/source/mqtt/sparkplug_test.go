package mqtt

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"google.golang.org/protobuf/proto"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
	spb "github.com/plantsync/plantsync/proto/sparkplug"
)

// metric builds a Sparkplug metric; an empty name sends the alias only.
func metric(name string, alias uint64, dt spb.DataType, value any) *spb.Payload_Metric {
	m := &spb.Payload_Metric{Alias: proto.Uint64(alias)}
	if name != "" {
		m.Name = proto.String(name)
		m.Datatype = proto.Uint32(uint32(dt))
	}
	switch v := value.(type) {
	case int32:
		m.Value = &spb.Payload_Metric_IntValue{IntValue: uint32(v)}
	case uint64:
		m.Value = &spb.Payload_Metric_LongValue{LongValue: v}
	case float32:
		m.Value = &spb.Payload_Metric_FloatValue{FloatValue: v}
	case float64:
		m.Value = &spb.Payload_Metric_DoubleValue{DoubleValue: v}
	case bool:
		m.Value = &spb.Payload_Metric_BooleanValue{BooleanValue: v}
	case string:
		m.Value = &spb.Payload_Metric_StringValue{StringValue: v}
	}
	return m
}

func withUnit(m *spb.Payload_Metric, unit string) *spb.Payload_Metric {
	m.Properties = &spb.Payload_PropertySet{Keys: []string{"engUnit"},
		Values: []*spb.Payload_PropertyValue{{Type: proto.Uint32(uint32(spb.DataType_String)), Value: &spb.Payload_PropertyValue_StringValue{StringValue: unit}}}}
	return m
}

func spPayload(t testing.TB, seq int, ms ...*spb.Payload_Metric) []byte {
	t.Helper()
	p := &spb.Payload{Timestamp: proto.Uint64(uint64(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixMilli())), Metrics: ms}
	if seq >= 0 {
		p.Seq = proto.Uint64(uint64(seq))
	}
	b, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func nbirth(t testing.TB, seq int, bdSeq uint64) []byte {
	return spPayload(t, seq,
		metric("bdSeq", 0, spb.DataType_Int64, bdSeq),
		metric("Node Control/Rebirth", 3, spb.DataType_Boolean, false),
		withUnit(metric("Temperature", 1, spb.DataType_Float, float32(20.1)), "°C"),
		metric("Count", 2, spb.DataType_Int32, int32(-7)),
		metric("Running", 4, spb.DataType_Boolean, true))
}

// edgeNode is a test Sparkplug edge node: it publishes and counts the
// rebirth requests addressed to it.
type edgeNode struct {
	c        paho.Client
	rebirths atomic.Int32
}

func newEdgeNode(t *testing.T, broker string) *edgeNode {
	e := &edgeNode{c: testPublisher(t, broker)}
	tok := e.c.Subscribe("spBv1.0/Plant1/NCMD/Edge1", 0, func(_ paho.Client, m paho.Message) {
		var p spb.Payload
		if proto.Unmarshal(m.Payload(), &p) == nil {
			for _, mt := range p.GetMetrics() {
				if mt.GetName() == spRebirthMetric && mt.GetBooleanValue() {
					e.rebirths.Add(1)
				}
			}
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	return e
}

func (e *edgeNode) pub(t *testing.T, typ, device string, payload []byte) {
	t.Helper()
	topic := "spBv1.0/Plant1/" + typ + "/Edge1"
	if device != "" {
		topic += "/" + device
	}
	publish(t, e.c, topic, 1, false, payload)
}

func sparkplugConfig(broker string) *Config {
	c := baseConfig(broker, Subscription{Topic: "spBv1.0/Plant1/#", DataFormat: FormatSparkplugB})
	c.Sparkplug.RebirthInterval = 0
	return c
}

func observations(evs []*pb.Event) map[string]*pb.Observation {
	out := map[string]*pb.Observation{}
	for _, e := range eventsOfType(evs, "observation") {
		out[e.GetAttributes()["message_type"]+" "+e.GetAttributes()["metric"]] = e.GetObservation()
	}
	return out
}

func TestSparkplugBirthDataDeathWithAliases(t *testing.T) {
	_, addr := startBroker(t)
	dir := t.TempDir()
	buf := openBuffer(t, dir)
	cfg := sparkplugConfig(addr)
	s, reg := testSource(t, cfg, buf, t.TempDir())
	waitRunning(t, s)
	edge := newEdgeNode(t, addr)

	edge.pub(t, spNBIRTH, "", nbirth(t, 0, 7))
	edge.pub(t, spDBIRTH, "Press1", spPayload(t, 1, metric("Pressure", 10, spb.DataType_Double, 3.25)))
	edge.pub(t, spNDATA, "", spPayload(t, 2, metric("", 1, 0, float32(21.5)), metric("", 2, 0, int32(-5))))
	edge.pub(t, spDDATA, "Press1", spPayload(t, 3, metric("", 10, 0, 3.5)))
	edge.pub(t, spDDEATH, "Press1", spPayload(t, 4))
	edge.pub(t, spNDEATH, "", spPayload(t, -1, metric("bdSeq", 0, spb.DataType_Int64, uint64(7))))

	// NBIRTH: state + 3 metrics (bdSeq and Node Control are bookkeeping);
	// DBIRTH: state + 1; NDATA 2; DDATA 1; DDEATH 1; NDEATH 1.
	eventually(t, 5*time.Second, "sparkplug events committed", func() bool { return len(bufferedEvents(t, buf)) == 4+2+2+1+1+1 })
	evs := bufferedEvents(t, buf)
	obs := observations(evs)
	if o := obs["NDATA Temperature"]; o.GetDoubleValue() != 21.5 || o.GetUnit() != "°C" || o.GetDataType() != "Float" {
		t.Errorf("NDATA Temperature by alias: %v", o)
	}
	if o := obs["NDATA Count"]; o.GetIntValue() != -5 || o.GetDataType() != "Int32" {
		t.Errorf("NDATA Count by alias: %v", o)
	}
	if o := obs["NBIRTH Temperature"]; o.GetDoubleValue() != 20.1 {
		t.Errorf("float 20.1 should read 20.1, got %v", o.GetDoubleValue())
	}
	if o := obs["DDATA Pressure"]; o.GetDoubleValue() != 3.5 {
		t.Errorf("DDATA Pressure: %v", o)
	}
	if _, ok := obs["NBIRTH bdSeq"]; ok {
		t.Error("bdSeq became an observation")
	}
	var states []string
	for _, e := range eventsOfType(evs, "machine.state") {
		states = append(states, e.GetMachineState().GetMachine()+"="+e.GetMachineState().GetState())
	}
	if want := "[Edge1=online Edge1/Press1=online Edge1/Press1=offline Edge1=offline]"; "["+strings.Join(states, " ")+"]" != want {
		t.Errorf("machine states %v, want %s", states, want)
	}
	if edge.rebirths.Load() != 0 || metricValue(t, reg, "plantsync_agent_mqtt_sparkplug_rebirth_requests_total") != 0 {
		t.Error("rebirth requested although every BIRTH was seen")
	}
	// Every id is derived from the message: a redelivery of the NDATA maps
	// to the same ids.
	ids := map[string]bool{}
	for _, e := range evs {
		if ids[e.GetId()] {
			t.Fatalf("id %s used twice", e.GetId())
		}
		ids[e.GetId()] = true
	}

	// The aliases are committed with the buffer: after a restart NDATA by
	// alias still resolves, without a rebirth.
	stopSource(t, s)
	edge.pub(t, spNBIRTH, "", nbirth(t, 0, 8))
	s2, _ := testSource(t, sparkplugConfig(addr), buf, t.TempDir())
	_ = s2
	// s2 missed the NBIRTH above (not subscribed yet) but knows bdSeq 7's
	// aliases, which are the same.
	waitRunning(t, s2)
	before := len(bufferedEvents(t, buf))
	edge.pub(t, spNDATA, "", spPayload(t, 1, metric("", 1, 0, float32(22))))
	eventually(t, 5*time.Second, "NDATA after restart", func() bool { return len(bufferedEvents(t, buf)) == before+1 })
	if o := observations(bufferedEvents(t, buf)[before:])["NDATA Temperature"]; o.GetDoubleValue() != 22 {
		t.Errorf("after restart: %v", o)
	}
}

// The host joins after the NBIRTH: NDATA by alias cannot be resolved, so it
// is quarantined and a rebirth is requested; the edge node answers with a
// new NBIRTH, later NDATA maps, and the quarantined one replays.
func TestSparkplugRebirthAfterMissedBirth(t *testing.T) {
	mb, addr := startBroker(t)
	buf := openBuffer(t, t.TempDir())
	edge := newEdgeNode(t, addr)
	edge.pub(t, spNBIRTH, "", nbirth(t, 0, 1)) // nobody listens yet

	cfg := sparkplugConfig(addr)
	cfg.Sparkplug.HostID = "plantsync-test-host"
	s, reg := testSource(t, cfg, buf, t.TempDir())
	waitRunning(t, s)

	edge.pub(t, spNDATA, "", spPayload(t, 1, metric("", 1, 0, float32(30))))
	eventually(t, 5*time.Second, "rebirth request at the edge node", func() bool { return edge.rebirths.Load() == 1 })
	eventually(t, 5*time.Second, "NDATA quarantined", func() bool { return len(eventsOfType(bufferedEvents(t, buf), "source.error")) == 1 })
	se := eventsOfType(bufferedEvents(t, buf), "source.error")[0].GetSourceError()
	if want := "alias 1 unknown for edge node Plant1/Edge1 (no BIRTH with it seen); rebirth requested"; !strings.Contains(se.GetReason(), want) {
		t.Errorf("reason %q lacks %q", se.GetReason(), want)
	}

	edge.pub(t, spNBIRTH, "", nbirth(t, 0, 2))
	edge.pub(t, spNDATA, "", spPayload(t, 1, metric("", 1, 0, float32(31))))
	eventually(t, 5*time.Second, "NDATA mapped after the rebirth", func() bool {
		return observations(bufferedEvents(t, buf))["NDATA Temperature"].GetDoubleValue() == 31
	})
	// A gap in the sequence numbers asks for another rebirth.
	edge.pub(t, spNDATA, "", spPayload(t, 5, metric("", 2, 0, int32(1))))
	eventually(t, 5*time.Second, "rebirth request after a gap", func() bool { return edge.rebirths.Load() == 2 })
	if got := metricValue(t, reg, "plantsync_agent_mqtt_sparkplug_sequence_gaps_total"); got != 1 {
		t.Errorf("sequence gaps %v, want 1", got)
	}

	rep, err := s.Replay(context.Background(), nil)
	if err != nil || rep.Replayed != 1 {
		t.Fatalf("replay: %+v %v", rep, err)
	}
	found := false
	for _, e := range eventsOfType(bufferedEvents(t, buf), "observation") {
		found = found || e.GetObservation().GetDoubleValue() == 30
	}
	if !found {
		t.Error("replayed NDATA (Temperature 30) not in the buffer")
	}

	// As primary host the source keeps its STATE retained on the broker.
	if st := retained(mb, "spBv1.0/STATE/plantsync-test-host"); !strings.Contains(st, `"online":true`) {
		t.Errorf("STATE while running: %q", st)
	}
	stopSource(t, s)
	if st := retained(mb, "spBv1.0/STATE/plantsync-test-host"); !strings.Contains(st, `"online":false`) {
		t.Errorf("STATE after shutdown: %q", st)
	}
}

// retained is the payload the broker retains for topic.
func retained(b *mochi.Server, topic string) string {
	msgs := b.Topics.Messages(topic)
	if len(msgs) == 0 {
		return ""
	}
	return string(msgs[0].Payload)
}
