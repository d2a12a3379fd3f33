package mqtt

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// fieldKind is the canonical type of a mapped field; the mapper converts
// what the payload holds into it.
type fieldKind int

const (
	kindString   fieldKind = iota
	kindQuantity           // decimal text with a unit (pb.Quantity)
	kindTime
	kindBool
	kindUint
	kindValue // an observation's value: decimal, text or bool
)

func (k fieldKind) String() string {
	return [...]string{"text", "quantity", "time", "bool", "unsigned integer", "value"}[k]
}

// Envelope fields every JSON-mapped event type has.
const (
	fieldOccurredAt    = "occurred_at"
	fieldCorrelationID = "correlation_id"
)

// eventSchema is one canonical event type as the MQTT mapper fills it.
type eventSchema struct {
	fields map[string]fieldKind
	// defaults are the mappings used for fields a subscription does not
	// list: the plain reader's conventional payload keys.
	defaults map[string]Value
	build    func(f fieldValues, ev *pb.Event)
}

// fieldValues holds converted values by canonical field name.
type fieldValues map[string]any

func (f fieldValues) str(name string) string {
	s, _ := f[name].(string)
	return s
}

func (f fieldValues) qty(name string) *pb.Quantity {
	q, _ := f[name].(*pb.Quantity)
	return q
}

func (f fieldValues) boolean(name string) bool {
	b, _ := f[name].(bool)
	return b
}

func (f fieldValues) ts(name string) *timestamppb.Timestamp {
	t, ok := f[name].(time.Time)
	if !ok {
		return nil
	}
	return timestamppb.New(t)
}

// opt and req are the defaults' shorthands: an optional payload key of the
// field's own name, and a required one elsewhere.
func opt(path string) Value { return Value{Path: path, Optional: true} }

func qtyDefault(required bool) Value {
	return Value{Path: "quantity", UnitPath: "unit", Optional: !required}
}

// schemas lists the event types the MQTT mapper produces from JSON, text
// and number payloads. Sparkplug B produces observation and machine.state.
var schemas = map[string]*eventSchema{
	"production.completion": {
		fields: map[string]fieldKind{"order": kindString, "operation": kindString, "item": kindString,
			"work_center": kindString, "good": kindQuantity, "scrap": kindQuantity, "lot": kindString},
		defaults: map[string]Value{"order": opt("order"), "operation": opt("operation"), "item": opt("item"),
			"work_center": opt("work_center"), "good": qtyDefault(true), "lot": opt("lot")},
		build: func(f fieldValues, ev *pb.Event) {
			ev.Payload = &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{
				Order: f.str("order"), Operation: f.str("operation"), Item: f.str("item"),
				WorkCenter: f.str("work_center"), Good: f.qty("good"), Scrap: f.qty("scrap"), Lot: f.str("lot"),
			}}
		},
	},
	"material.consumption": {
		fields: map[string]fieldKind{"order": kindString, "item": kindString, "quantity": kindQuantity,
			"lot": kindString, "work_center": kindString},
		defaults: map[string]Value{"order": opt("order"), "item": opt("item"), "quantity": qtyDefault(true),
			"lot": opt("lot"), "work_center": opt("work_center")},
		build: func(f fieldValues, ev *pb.Event) {
			ev.Payload = &pb.Event_MaterialConsumption{MaterialConsumption: &pb.MaterialConsumption{
				Order: f.str("order"), Item: f.str("item"), Quantity: f.qty("quantity"), Lot: f.str("lot"), WorkCenter: f.str("work_center"),
			}}
		},
	},
	"material.shortage": {
		fields: map[string]fieldKind{"item": kindString, "quantity": kindQuantity, "required_by": kindTime,
			"order": kindString, "work_center": kindString, "warehouse": kindString},
		defaults: map[string]Value{"item": opt("item"), "quantity": qtyDefault(true), "required_by": opt("required_by"),
			"order": opt("order"), "work_center": opt("work_center"), "warehouse": opt("warehouse")},
		build: func(f fieldValues, ev *pb.Event) {
			ev.Payload = &pb.Event_MaterialShortage{MaterialShortage: &pb.MaterialShortage{
				Item: f.str("item"), Quantity: f.qty("quantity"), RequiredBy: f.ts("required_by"),
				Order: f.str("order"), WorkCenter: f.str("work_center"), Warehouse: f.str("warehouse"),
			}}
		},
	},
	"production.order.status": {
		fields:   map[string]fieldKind{"order": kindString, "status": kindString, "work_center": kindString},
		defaults: map[string]Value{"order": opt("order"), "status": opt("status"), "work_center": opt("work_center")},
		build: func(f fieldValues, ev *pb.Event) {
			ev.Payload = &pb.Event_ProductionOrderStatus{ProductionOrderStatus: &pb.ProductionOrderStatus{
				Order: f.str("order"), Status: f.str("status"), WorkCenter: f.str("work_center"),
			}}
		},
	},
	"machine.state": {
		fields: map[string]fieldKind{"work_center": kindString, "machine": kindString, "state": kindString, "reason": kindString},
		defaults: map[string]Value{"work_center": opt("work_center"), "machine": opt("machine"),
			"state": {Path: "state"}, "reason": opt("reason")},
		build: func(f fieldValues, ev *pb.Event) {
			ev.Payload = &pb.Event_MachineState{MachineState: &pb.MachineState{
				WorkCenter: f.str("work_center"), Machine: f.str("machine"), State: f.str("state"), Reason: f.str("reason"),
			}}
		},
	},
	"machine.alarm": {
		fields: map[string]fieldKind{"work_center": kindString, "machine": kindString, "alarm_id": kindString,
			"condition": kindString, "severity": kindUint, "message": kindString, "active": kindBool, "acknowledged": kindBool},
		defaults: map[string]Value{"work_center": opt("work_center"), "machine": opt("machine"), "alarm_id": {Path: "alarm_id"},
			"condition": opt("condition"), "severity": opt("severity"), "message": opt("message"),
			"active": opt("active"), "acknowledged": opt("acknowledged")},
		build: func(f fieldValues, ev *pb.Event) {
			sev, _ := f["severity"].(uint64)
			ev.Payload = &pb.Event_MachineAlarm{MachineAlarm: &pb.MachineAlarm{
				WorkCenter: f.str("work_center"), Machine: f.str("machine"), AlarmId: f.str("alarm_id"),
				Condition: f.str("condition"), Severity: uint32(min(sev, 1<<32-1)), Message: f.str("message"),
				Active: f.boolean("active"), Acknowledged: f.boolean("acknowledged"),
			}}
		},
	},
	"quality.hold": {
		fields: map[string]fieldKind{"item": kindString, "lot": kindString, "quantity": kindQuantity,
			"reason": kindString, "released": kindBool},
		defaults: map[string]Value{"item": opt("item"), "lot": opt("lot"), "quantity": qtyDefault(false),
			"reason": opt("reason"), "released": opt("released")},
		build: func(f fieldValues, ev *pb.Event) {
			ev.Payload = &pb.Event_QualityHold{QualityHold: &pb.QualityHold{
				Item: f.str("item"), Lot: f.str("lot"), Quantity: f.qty("quantity"), Reason: f.str("reason"), Released: f.boolean("released"),
			}}
		},
	},
	"observation": {
		fields: map[string]fieldKind{"value": kindValue, "unit": kindString, "data_type": kindString, "source_timestamp": kindTime},
		defaults: map[string]Value{"value": {Path: "value"}, "unit": opt("unit"), "data_type": opt("data_type"),
			"source_timestamp": opt("source_timestamp")},
		build: func(f fieldValues, ev *pb.Event) {
			o := &pb.Observation{Unit: f.str("unit"), DataType: f.str("data_type"), SourceTimestamp: f.ts("source_timestamp")}
			switch v := f["value"].(type) {
			case obsDecimal:
				o.Value = &pb.Observation_DecimalValue{DecimalValue: string(v)}
			case string:
				o.Value = &pb.Observation_StringValue{StringValue: v}
			case bool:
				o.Value = &pb.Observation_BoolValue{BoolValue: v}
			case float64:
				o.Value = &pb.Observation_DoubleValue{DoubleValue: v}
			}
			ev.Payload = &pb.Event_Observation{Observation: o}
		},
	},
}

// obsDecimal marks an observation value that is an exact decimal.
type obsDecimal string

// fieldKindOf returns the kind of a field of schema s, envelope included.
func (s *eventSchema) fieldKindOf(name string) (fieldKind, bool) {
	switch name {
	case fieldOccurredAt:
		return kindTime, true
	case fieldCorrelationID:
		return kindString, true
	}
	k, ok := s.fields[name]
	return k, ok
}

func (s *eventSchema) fieldNames() []string {
	names := append(sortedKeys(s.fields), fieldCorrelationID, fieldOccurredAt)
	return names
}

func eventTypes() []string { return sortedKeys(schemas) }

func newQuantity(value, unit string) *pb.Quantity { return &pb.Quantity{Value: value, Unit: unit} }
