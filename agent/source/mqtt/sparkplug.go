package mqtt

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/agent/buffer"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
	spb "github.com/plantsync/plantsync/proto/sparkplug"
)

// Sparkplug B (Eclipse Sparkplug 3.0): edge nodes publish on
// spBv1.0/<group>/<type>/<edge node>[/<device>]. A BIRTH lists every metric
// with its name, type and optional alias; later DATA may carry only the
// alias. Every message of a node after its NBIRTH carries a sequence number
// that increments modulo 256. The agent keeps, per edge node, the aliases
// and the last sequence number, commits them with the events (so they
// survive kill -9), and asks for a rebirth (NCMD Node Control/Rebirth) when
// an alias is unknown or a sequence number is missing.

const sparkplugNamespace = "spBv1.0"

// Sparkplug message types.
const (
	spNBIRTH = "NBIRTH"
	spNDEATH = "NDEATH"
	spNDATA  = "NDATA"
	spNCMD   = "NCMD"
	spDBIRTH = "DBIRTH"
	spDDEATH = "DDEATH"
	spDDATA  = "DDATA"
	spDCMD   = "DCMD"
	spSTATE  = "STATE"
)

// Metric names of the specification's control metrics.
const (
	spRebirthMetric = "Node Control/Rebirth"
	spBdSeqMetric   = "bdSeq"
)

// spTopic is a parsed Sparkplug topic.
type spTopic struct {
	group, msgType, edge, device string
}

func (t spTopic) nodeKey() string { return t.group + "\x00" + t.edge }

func (t spTopic) machine() string {
	if t.device == "" {
		return t.edge
	}
	return t.edge + "/" + t.device
}

// parseSparkplugTopic splits a Sparkplug B topic. STATE topics (host
// applications) come back with msgType STATE.
func parseSparkplugTopic(topic string) (spTopic, error) {
	levels := strings.Split(topic, "/")
	if len(levels) >= 2 && (levels[0] == sparkplugNamespace && levels[1] == spSTATE || levels[0] == spSTATE) {
		return spTopic{msgType: spSTATE}, nil
	}
	if levels[0] != sparkplugNamespace {
		return spTopic{}, fmt.Errorf("topic does not start with %s/", sparkplugNamespace)
	}
	if len(levels) < 4 || len(levels) > 5 {
		return spTopic{}, fmt.Errorf("want %s/<group>/<message type>/<edge node>[/<device>]", sparkplugNamespace)
	}
	t := spTopic{group: levels[1], msgType: levels[2], edge: levels[3]}
	if len(levels) == 5 {
		t.device = levels[4]
	}
	device := strings.HasPrefix(t.msgType, "D")
	switch t.msgType {
	case spNBIRTH, spNDEATH, spNDATA, spNCMD, spDBIRTH, spDDEATH, spDDATA, spDCMD:
	default:
		return spTopic{}, fmt.Errorf("message type %q is not a Sparkplug B type", t.msgType)
	}
	if device != (t.device != "") {
		return spTopic{}, fmt.Errorf("%s wants %s levels", t.msgType, map[bool]string{true: "5", false: "4"}[device])
	}
	if t.group == "" || t.edge == "" || device && t.device == "" {
		return spTopic{}, fmt.Errorf("empty group, edge node or device id")
	}
	return t, nil
}

// decodeSparkplug unmarshals a Sparkplug B payload.
func decodeSparkplug(payload []byte) (*spb.Payload, *mapError) {
	if len(payload) > maxPayload {
		return nil, &mapError{offset: -1, msg: fmt.Sprintf("payload of %d bytes exceeds %d", len(payload), maxPayload)}
	}
	var p spb.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		return nil, &mapError{offset: -1, msg: "not a Sparkplug B payload (protobuf): " + err.Error()}
	}
	return &p, nil
}

// spMetricDef is what a BIRTH says about one metric.
type spMetricDef struct {
	Name     string `json:"n"`
	DataType uint32 `json:"t"`
	Unit     string `json:"u,omitempty"`
}

// spScope is the metric table of an edge node or one of its devices, as
// its BIRTH gave it.
type spScope struct {
	BdSeq   uint64                 `json:"bd,omitempty"`
	Metrics map[string]spMetricDef `json:"m"`
	Aliases map[uint64]string      `json:"a,omitempty"`
}

func newScope() *spScope {
	return &spScope{Metrics: map[string]spMetricDef{}, Aliases: map[uint64]string{}}
}

// spNode is the host's view of one edge node.
type spNode struct {
	born     bool // an NBIRTH (or its committed state) is known
	node     *spScope
	devices  map[string]*spScope
	seq      uint8
	seqKnown bool
	// lastRebirth rate-limits rebirth requests.
	lastRebirth time.Time
}

// sparkplugState holds every edge node a source has heard of. It is used
// from the message handler and from quarantine replay, so it locks.
type sparkplugState struct {
	mu     sync.Mutex
	source string // for StateWrite
	nodes  map[string]*spNode
}

func newSparkplugState(source string) *sparkplugState {
	return &sparkplugState{source: source, nodes: map[string]*spNode{}}
}

// State keys inside the source's state bucket.
const (
	stateNodePrefix   = "spn\x00" // + group \0 edge: node scope (JSON)
	stateDevicePrefix = "spd\x00" // + group \0 edge \0 device: device scope
	stateSeqPrefix    = "sps\x00" // + group \0 edge: last sequence number
)

// load restores one committed key; unknown keys are not its business.
func (st *sparkplugState) load(key, value []byte) error {
	k := string(key)
	switch {
	case strings.HasPrefix(k, stateNodePrefix):
		sc := newScope()
		if err := json.Unmarshal(value, sc); err != nil {
			return fmt.Errorf("sparkplug node state %q: %w", k, err)
		}
		n := st.node(strings.TrimPrefix(k, stateNodePrefix))
		n.node, n.born = sc, true
	case strings.HasPrefix(k, stateDevicePrefix):
		rest := strings.TrimPrefix(k, stateDevicePrefix)
		i := strings.LastIndexByte(rest, 0)
		if i < 0 {
			return nil
		}
		sc := newScope()
		if err := json.Unmarshal(value, sc); err != nil {
			return fmt.Errorf("sparkplug device state %q: %w", k, err)
		}
		st.node(rest[:i]).devices[rest[i+1:]] = sc
	case strings.HasPrefix(k, stateSeqPrefix):
		if len(value) == 1 {
			n := st.node(strings.TrimPrefix(k, stateSeqPrefix))
			n.seq, n.seqKnown = value[0], true
		}
	}
	return nil
}

func (st *sparkplugState) node(key string) *spNode {
	n := st.nodes[key]
	if n == nil {
		n = &spNode{devices: map[string]*spScope{}}
		st.nodes[key] = n
	}
	return n
}

// spOutcome is what one Sparkplug message yields.
type spOutcome struct {
	events  []*pb.Event
	state   []buffer.StateWrite
	rebirth bool // ask the edge node for a rebirth
	dup     bool // sequence number already seen: a redelivery
	gap     bool
	ignored string // why the message yields nothing (not an error)
}

// eventMaker fills the envelope of events a source creates.
type eventMaker func(id, eventType, topic string, occurred time.Time) *pb.Event

// handle maps one Sparkplug message. replay skips sequence checks and state
// changes (a quarantined message is re-read long after its time).
func (st *sparkplugState) handle(topic string, payload []byte, mk eventMaker, plant, source string, replay bool) (spOutcome, *mapError) {
	var out spOutcome
	t, err := parseSparkplugTopic(topic)
	if err != nil {
		return out, &mapError{offset: -1, msg: "sparkplug topic: " + err.Error()}
	}
	switch t.msgType {
	case spSTATE:
		out.ignored = "host application STATE"
		return out, nil
	case spNCMD, spDCMD:
		out.ignored = "command to an edge node"
		return out, nil
	}
	p, merr := decodeSparkplug(payload)
	if merr != nil {
		return out, merr
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.node(t.nodeKey())

	// Sequence numbers: every message of a node but NDEATH carries one.
	if t.msgType != spNDEATH && !replay {
		if p.Seq == nil || p.GetSeq() > 255 {
			return out, &mapError{offset: -1, msg: fmt.Sprintf("%s without a sequence number 0-255 (seq %v)", t.msgType, p.Seq)}
		}
		seq := uint8(p.GetSeq())
		switch {
		case t.msgType == spNBIRTH:
		case !n.seqKnown || !n.born:
			out.rebirth = true // joined mid-stream: the host needs a BIRTH
		case seq == n.seq+1:
		case uint8(n.seq-seq) < 128:
			out.dup = true // at or behind the last one: redelivered
		default:
			out.gap, out.rebirth = true, true
		}
		if !out.dup {
			n.seq, n.seqKnown = seq, true
			out.state = append(out.state, buffer.StateWrite{Source: st.source, Key: []byte(stateSeqPrefix + t.nodeKey()), Value: []byte{seq}})
		}
	}

	payloadTS := p.GetTimestamp()
	idBase := fmt.Sprintf("spb/%s/%s/%s/%s/%d/%d", t.group, t.edge, t.device, t.msgType, p.GetSeq(), payloadTS)
	occurred := msTime(payloadTS)
	stateEvent := func(state string, id string) {
		ev := mk(EventID(plant, source, id), "machine.state", topic, occurred)
		ev.Payload = &pb.Event_MachineState{MachineState: &pb.MachineState{WorkCenter: t.group, Machine: t.machine(), State: state, Reason: t.msgType}}
		spAttrs(ev, t, p)
		out.events = append(out.events, ev)
	}

	var scope *spScope
	switch t.msgType {
	case spNBIRTH:
		sc := newScope()
		if bd, ok := findMetric(p, spBdSeqMetric); ok {
			sc.BdSeq = metricUint(bd)
		}
		if err := sc.learn(p); err != nil {
			return out, err
		}
		if !replay {
			for dev := range n.devices {
				out.state = append(out.state, buffer.StateWrite{Source: st.source, Key: []byte(stateDevicePrefix + t.nodeKey() + "\x00" + dev)})
			}
			n.node, n.born, n.devices = sc, true, map[string]*spScope{}
			out.state = append(out.state, buffer.StateWrite{Source: st.source, Key: []byte(stateNodePrefix + t.nodeKey()), Value: mustJSON(sc)})
		}
		scope = sc
		stateEvent("online", fmt.Sprintf("%s/bd%d/state", idBase, sc.BdSeq))
	case spDBIRTH:
		sc := newScope()
		if err := sc.learn(p); err != nil {
			return out, err
		}
		if !replay {
			n.devices[t.device] = sc
			out.state = append(out.state, buffer.StateWrite{Source: st.source, Key: []byte(stateDevicePrefix + t.nodeKey() + "\x00" + t.device), Value: mustJSON(sc)})
		}
		scope = sc
		stateEvent("online", idBase+"/state")
	case spNDEATH:
		bd, hasBd := findMetric(p, spBdSeqMetric)
		if n.born && hasBd && n.node != nil && metricUint(bd) != n.node.BdSeq {
			out.ignored = fmt.Sprintf("NDEATH with bdSeq %d of an earlier session (current %d)", metricUint(bd), n.node.BdSeq)
			return out, nil
		}
		if !replay {
			n.seqKnown = false
		}
		stateEvent("offline", fmt.Sprintf("spb/%s/%s//NDEATH/bd%d/%d", t.group, t.edge, metricUint(bd), payloadTS))
		return out, nil
	case spDDEATH:
		stateEvent("offline", idBase+"/state")
		return out, nil
	case spNDATA:
		scope = n.node
	case spDDATA:
		scope = n.devices[t.device]
	}
	if scope == nil {
		scope = newScope()
		out.rebirth = true
	}

	for i, m := range p.GetMetrics() {
		def, err := scope.resolve(m)
		if err != nil {
			out.rebirth = true
			return out, &mapError{offset: -1, field: fmt.Sprintf("metrics[%d]", i),
				msg: fmt.Sprintf("%v for %s %s/%s (no BIRTH with it seen); rebirth requested", err, map[bool]string{true: "device", false: "edge node"}[t.device != ""], t.group, t.machine())}
		}
		if isControlMetric(def.Name) {
			continue
		}
		obs, verr := observe(m, def)
		if verr != nil {
			return out, &mapError{offset: -1, field: fmt.Sprintf("metrics[%d] (%s)", i, def.Name), msg: verr.Error()}
		}
		ts := payloadTS
		if m.Timestamp != nil {
			ts = m.GetTimestamp()
		}
		obs.SourceTimestamp = timestamppb.New(msTime(ts))
		ev := mk(EventID(plant, source, fmt.Sprintf("%s/%d/%s", idBase, i, def.Name)), "observation", topic+"#"+def.Name, msTime(ts))
		ev.Payload = &pb.Event_Observation{Observation: obs}
		spAttrs(ev, t, p)
		ev.Attributes["metric"] = def.Name
		if m.GetIsHistorical() {
			ev.Attributes["historical"] = "true"
		}
		out.events = append(out.events, ev)
	}
	return out, nil
}

func spAttrs(ev *pb.Event, t spTopic, p *spb.Payload) {
	ev.Attributes["sparkplug_group"] = t.group
	ev.Attributes["edge_node"] = t.edge
	if t.device != "" {
		ev.Attributes["device"] = t.device
	}
	ev.Attributes["message_type"] = t.msgType
	if p.Seq != nil {
		ev.Attributes["seq"] = strconv.FormatUint(p.GetSeq(), 10)
	}
}

// learn records the metrics of a BIRTH.
func (s *spScope) learn(p *spb.Payload) *mapError {
	for i, m := range p.GetMetrics() {
		if m.GetName() == "" {
			return &mapError{offset: -1, field: fmt.Sprintf("metrics[%d]", i), msg: "BIRTH metric without a name"}
		}
		if !utf8.ValidString(m.GetName()) {
			return &mapError{offset: -1, field: fmt.Sprintf("metrics[%d]", i), msg: "metric name is not valid UTF-8"}
		}
		def := spMetricDef{Name: m.GetName(), DataType: m.GetDatatype(), Unit: engUnit(m)}
		if m.Alias != nil {
			if old, dup := s.Aliases[m.GetAlias()]; dup && old != def.Name {
				return &mapError{offset: -1, field: fmt.Sprintf("metrics[%d]", i), msg: fmt.Sprintf("alias %d given to both %q and %q", m.GetAlias(), old, def.Name)}
			}
			s.Aliases[m.GetAlias()] = def.Name
		}
		s.Metrics[def.Name] = def
	}
	return nil
}

// resolve names a metric by its name or alias and fills in its type.
func (s *spScope) resolve(m *spb.Payload_Metric) (spMetricDef, error) {
	name := m.GetName()
	if !utf8.ValidString(name) {
		return spMetricDef{}, fmt.Errorf("metric name is not valid UTF-8")
	}
	if name == "" {
		if m.Alias == nil {
			return spMetricDef{}, fmt.Errorf("metric has neither name nor alias")
		}
		var ok bool
		if name, ok = s.Aliases[m.GetAlias()]; !ok {
			return spMetricDef{}, fmt.Errorf("alias %d unknown", m.GetAlias())
		}
	}
	def, known := s.Metrics[name]
	if !known {
		def = spMetricDef{Name: name}
	}
	if m.Datatype != nil {
		def.DataType = m.GetDatatype()
	}
	if u := engUnit(m); u != "" {
		def.Unit = u
	}
	return def, nil
}

func isControlMetric(name string) bool {
	return name == spBdSeqMetric || strings.HasPrefix(name, "Node Control/") || strings.HasPrefix(name, "Device Control/")
}

func findMetric(p *spb.Payload, name string) (*spb.Payload_Metric, bool) {
	for _, m := range p.GetMetrics() {
		if m.GetName() == name {
			return m, true
		}
	}
	return nil, false
}

func metricUint(m *spb.Payload_Metric) uint64 {
	switch v := m.GetValue().(type) {
	case *spb.Payload_Metric_LongValue:
		return v.LongValue
	case *spb.Payload_Metric_IntValue:
		return uint64(v.IntValue)
	}
	return 0
}

// engUnit reads the conventional engineering-unit property.
func engUnit(m *spb.Payload_Metric) string {
	ps := m.GetProperties()
	for i, k := range ps.GetKeys() {
		if (k == "engUnit" || k == "engUnits" || k == "unit") && i < len(ps.GetValues()) {
			return strings.ToValidUTF8(ps.GetValues()[i].GetStringValue(), "\uFFFD")
		}
	}
	return ""
}

func msTime(ms uint64) time.Time {
	if ms == 0 || ms > uint64(math.MaxInt64/int64(time.Millisecond)) {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms)).UTC()
}

// Sparkplug data types (spb.DataType), as numbers for the switch below.
var spTypeNames = spb.DataType_name

// observe turns a metric value into an observation, by its Sparkplug type.
func observe(m *spb.Payload_Metric, def spMetricDef) (*pb.Observation, error) {
	o := &pb.Observation{DataType: spTypeNames[int32(def.DataType)], Unit: def.Unit}
	if o.DataType == "" {
		o.DataType = "Unknown"
	}
	if m.GetIsNull() || m.GetValue() == nil {
		return o, nil
	}
	dt := spb.DataType(def.DataType)
	switch v := m.GetValue().(type) {
	case *spb.Payload_Metric_IntValue:
		switch dt {
		case spb.DataType_Int8:
			o.Value = &pb.Observation_IntValue{IntValue: int64(int8(v.IntValue))}
		case spb.DataType_Int16:
			o.Value = &pb.Observation_IntValue{IntValue: int64(int16(v.IntValue))}
		case spb.DataType_Int32:
			o.Value = &pb.Observation_IntValue{IntValue: int64(int32(v.IntValue))}
		default:
			o.Value = &pb.Observation_UintValue{UintValue: uint64(v.IntValue)}
		}
	case *spb.Payload_Metric_LongValue:
		switch dt {
		case spb.DataType_Int64, spb.DataType_Int8, spb.DataType_Int16, spb.DataType_Int32:
			o.Value = &pb.Observation_IntValue{IntValue: int64(v.LongValue)}
		case spb.DataType_DateTime:
			o.Value = &pb.Observation_StringValue{StringValue: msTime(v.LongValue).Format(time.RFC3339Nano)}
		default:
			o.Value = &pb.Observation_UintValue{UintValue: v.LongValue}
		}
	case *spb.Payload_Metric_FloatValue:
		// The float's shortest decimal form, so 1.1f reads 1.1, not
		// 1.100000023841858.
		f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(v.FloatValue), 'g', -1, 32), 64)
		o.Value = &pb.Observation_DoubleValue{DoubleValue: f}
	case *spb.Payload_Metric_DoubleValue:
		o.Value = &pb.Observation_DoubleValue{DoubleValue: v.DoubleValue}
	case *spb.Payload_Metric_BooleanValue:
		o.Value = &pb.Observation_BoolValue{BoolValue: v.BooleanValue}
	case *spb.Payload_Metric_StringValue:
		// proto2 does not check UTF-8; the canonical event (proto3) must.
		if !utf8.ValidString(v.StringValue) {
			return nil, fmt.Errorf("string value is not valid UTF-8")
		}
		o.Value = &pb.Observation_StringValue{StringValue: v.StringValue}
	case *spb.Payload_Metric_BytesValue:
		o.Value = &pb.Observation_BytesValue{BytesValue: v.BytesValue}
	case *spb.Payload_Metric_DatasetValue:
		b, err := proto.Marshal(v.DatasetValue)
		if err != nil {
			return nil, fmt.Errorf("data set: %w", err)
		}
		o.Value, o.DataType = &pb.Observation_BytesValue{BytesValue: b}, "DataSet"
	case *spb.Payload_Metric_TemplateValue:
		b, err := proto.Marshal(v.TemplateValue)
		if err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
		o.Value, o.DataType = &pb.Observation_BytesValue{BytesValue: b}, "Template"
	default:
		return nil, fmt.Errorf("value of an extension type is not supported")
	}
	return o, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only maps of strings and numbers are marshalled here.
		return []byte("{}")
	}
	return b
}

// rebirthPayload is the NCMD that asks an edge node to publish its
// births again.
func rebirthPayload(now time.Time) ([]byte, error) {
	ts := uint64(now.UnixMilli())
	dt := uint32(spb.DataType_Boolean)
	name := spRebirthMetric
	return proto.Marshal(&spb.Payload{
		Timestamp: &ts,
		Metrics: []*spb.Payload_Metric{{
			Name: &name, Timestamp: &ts, Datatype: &dt,
			Value: &spb.Payload_Metric_BooleanValue{BooleanValue: true},
		}},
	})
}

// hostState is the Sparkplug 3.0 STATE payload of a primary host.
func hostState(online bool, ts time.Time) []byte {
	b, _ := json.Marshal(struct {
		Online    bool  `json:"online"`
		Timestamp int64 `json:"timestamp"`
	}{online, ts.UnixMilli()})
	return b
}

// rebirthDue reports whether a rebirth request to the node may go out now,
// and records it.
func (st *sparkplugState) rebirthDue(topic string, now time.Time, every time.Duration) (spTopic, bool) {
	t, err := parseSparkplugTopic(topic)
	if err != nil || t.msgType == spSTATE {
		return t, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.node(t.nodeKey())
	if !n.lastRebirth.IsZero() && now.Sub(n.lastRebirth) < every {
		return t, false
	}
	n.lastRebirth = now
	return t, true
}
