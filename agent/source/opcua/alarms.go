package opcua

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// selectField is one select clause of the EventFilter.
type selectField struct {
	name    string
	typeDef uint32
	path    []*ua.QualifiedName
	attr    ua.AttributeID
}

func qn(names ...string) []*ua.QualifiedName {
	out := make([]*ua.QualifiedName, len(names))
	for i, n := range names {
		out[i] = &ua.QualifiedName{Name: n}
	}
	return out
}

// standardEventFields are selected from every notifier. The condition
// fields come back null for plain events.
var standardEventFields = []selectField{
	{name: "EventId", typeDef: id.BaseEventType, path: qn("EventId"), attr: ua.AttributeIDValue},
	{name: "EventType", typeDef: id.BaseEventType, path: qn("EventType"), attr: ua.AttributeIDValue},
	{name: "SourceNode", typeDef: id.BaseEventType, path: qn("SourceNode"), attr: ua.AttributeIDValue},
	{name: "SourceName", typeDef: id.BaseEventType, path: qn("SourceName"), attr: ua.AttributeIDValue},
	{name: "Time", typeDef: id.BaseEventType, path: qn("Time"), attr: ua.AttributeIDValue},
	{name: "ReceiveTime", typeDef: id.BaseEventType, path: qn("ReceiveTime"), attr: ua.AttributeIDValue},
	{name: "Message", typeDef: id.BaseEventType, path: qn("Message"), attr: ua.AttributeIDValue},
	{name: "Severity", typeDef: id.BaseEventType, path: qn("Severity"), attr: ua.AttributeIDValue},
	// The condition's own NodeId: the empty path with the NodeId attribute
	// (Part 9, 5.5.2).
	{name: "ConditionId", typeDef: id.ConditionType, attr: ua.AttributeIDNodeID},
	{name: "ConditionName", typeDef: id.ConditionType, path: qn("ConditionName"), attr: ua.AttributeIDValue},
	{name: "Retain", typeDef: id.ConditionType, path: qn("Retain"), attr: ua.AttributeIDValue},
	{name: "ActiveState", typeDef: id.AlarmConditionType, path: qn("ActiveState", "Id"), attr: ua.AttributeIDValue},
	{name: "AckedState", typeDef: id.AcknowledgeableConditionType, path: qn("AckedState", "Id"), attr: ua.AttributeIDValue},
}

const (
	efEventID = iota
	efEventType
	efSourceNode
	efSourceName
	efTime
	efReceiveTime
	efMessage
	efSeverity
	efConditionID
	efConditionName
	efRetain
	efActiveState
	efAckedState
)

// Extra template variable of event mappings.
const efNotifier = 1000

// defaultAlarmFields map the standard fields onto machine.alarm.
var defaultAlarmFields = map[string]string{
	"machine":      "{SourceName}",
	"alarm_id":     "{ConditionId}",
	"condition":    "{ConditionName}",
	"severity":     "{Severity}",
	"message":      "{Message}",
	"active":       "{ActiveState}",
	"acknowledged": "{AckedState}",
}

// eventMapping is a compiled EventConfig.
type eventMapping struct {
	eventType string
	payload   protoreflect.FieldDescriptor
	fields    []fieldSetter
	selects   []selectField
}

func compileEventMapping(eventType string, fields map[string]string, extra []string) (*eventMapping, error) {
	fd, err := payloadField(eventType)
	if err != nil {
		return nil, err
	}
	em := &eventMapping{eventType: eventType, payload: fd, selects: append([]selectField(nil), standardEventFields...)}
	for _, s := range extra {
		em.selects = append(em.selects, selectField{name: s, typeDef: id.BaseEventType, path: parseBrowsePath(s), attr: ua.AttributeIDValue})
	}
	all := map[string]string{}
	if eventType == "machine.alarm" {
		for k, v := range defaultAlarmFields {
			all[k] = v
		}
	}
	for k, v := range fields {
		all[k] = v
	}
	names := make([]string, 0, len(em.selects)+1)
	for _, s := range em.selects {
		names = append(names, "{"+s.name+"}")
	}
	hint := strings.Join(append(names, "{notifier}"), ", ")
	lookup := func(name string) (int, bool) {
		if name == "notifier" {
			return efNotifier, true
		}
		for i, s := range em.selects {
			if s.name == name {
				return i, true
			}
		}
		return 0, false
	}
	var errs fieldErrors
	for _, name := range sortedKeys(all) {
		fs, err := compileField(fd.Message(), name, all[name], lookup, hint)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		em.fields = append(em.fields, fs)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return em, nil
}

// parseBrowsePath splits "Machine/2:Code" into qualified names; a numeric
// prefix before ':' is the namespace index.
func parseBrowsePath(s string) []*ua.QualifiedName {
	parts := strings.Split(s, "/")
	out := make([]*ua.QualifiedName, len(parts))
	for i, p := range parts {
		q := &ua.QualifiedName{Name: p}
		if ns, name, ok := strings.Cut(p, ":"); ok {
			if n, err := strconv.ParseUint(ns, 10, 16); err == nil {
				q = &ua.QualifiedName{NamespaceIndex: uint16(n), Name: name}
			}
		}
		out[i] = q
	}
	return out
}

func (em *eventMapping) filter() *ua.EventFilter {
	f := &ua.EventFilter{WhereClause: &ua.ContentFilter{}}
	for _, s := range em.selects {
		path := s.path
		if path == nil {
			path = []*ua.QualifiedName{}
		}
		f.SelectClauses = append(f.SelectClauses, &ua.SimpleAttributeOperand{
			TypeDefinitionID: ua.NewNumericNodeID(0, s.typeDef),
			BrowsePath:       path,
			AttributeID:      s.attr,
		})
	}
	return f
}

// buildAlarmEvent maps one event notification. The id derives from the
// server's EventId, which is unique per event occurrence (Part 5, 6.4.2),
// so a repeated delivery is dropped at the hub.
func buildAlarmEvent(it *item, fields []*ua.Variant, plant, endpoint string, now time.Time) *pb.Event {
	em := it.em
	text := make([]string, len(em.selects))
	for i := range em.selects {
		if i < len(fields) {
			text[i] = valueText(fields[i])
		}
	}
	get := func(v int) string {
		switch {
		case v == efNotifier:
			return it.key
		case v == efConditionID && text[efConditionID] == "":
			// A plain event has no condition; its source identifies it.
			return text[efSourceNode]
		case v >= 0 && v < len(text):
			return text[v]
		}
		return ""
	}
	var occurred time.Time
	for _, i := range []int{efTime, efReceiveTime} {
		if i < len(fields) && fields[i] != nil {
			if t, ok := fields[i].Value().(time.Time); ok && !t.IsZero() {
				occurred = t
				break
			}
		}
	}
	var evID string
	switch {
	case len(fields) > efEventID && fields[efEventID] != nil && len(fields[efEventID].ByteString()) > 0:
		evID = EventID(plant, endpoint, it.key, occurred, "event:"+hex.EncodeToString(fields[efEventID].ByteString()), 0)
	case !occurred.IsZero():
		evID = EventID(plant, endpoint, it.key, occurred, "event:"+strings.Join(text, "\x00"), 0)
	default:
		u, _ := uuid.NewV7()
		evID = u.String()
	}
	if occurred.IsZero() {
		occurred = now
	}
	ev := &pb.Event{
		Id:            evID,
		CorrelationId: evID,
		Plant:         plant,
		Source:        &pb.Source{Name: it.src, Kind: "opcua", Uri: it.uri},
		Type:          em.eventType,
		OccurredAt:    timestamppb.New(occurred),
		ObservedAt:    timestamppb.New(now),
		SchemaVersion: 1,
		Attributes:    map[string]string{"notifier": sanitize(it.key)},
	}
	if et := text[efEventType]; et != "" {
		ev.Attributes["event_type"] = et
	}
	if sn := text[efSourceNode]; sn != "" {
		ev.Attributes["source_node"] = sn
	}
	r := ev.ProtoReflect()
	payload := r.NewField(em.payload)
	if err := applyFields(payload.Message(), em.fields, get); err != nil {
		return sourceError(ev, fmt.Sprintf("event of notifier %s: %v", it.key, err), "notifier "+it.key, nil)
	}
	r.Set(em.payload, payload)
	return ev
}

func applyFields(msg protoreflect.Message, fields []fieldSetter, get func(int) string) error {
	m := mapping{fields: fields}
	return m.apply(msg, get)
}

// sourceError turns an event that could not be mapped into a source.error
// event, so the problem shows up at the hub instead of vanishing.
func sourceError(ev *pb.Event, reason, location string, raw []byte) *pb.Event {
	ev.Type = "source.error"
	ev.Payload = &pb.Event_SourceError{SourceError: &pb.SourceError{Reason: sanitize(reason), Location: sanitize(location), Raw: raw}}
	return ev
}
