package plantsyncv1_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// -update rewrites the fixtures. Never do that for a released version: the
// fixtures are what older agents put on the wire, and a newer hub must
// still read them exactly as before.
var update = flag.Bool("update", false, "rewrite golden wire fixtures (only when adding a new fixture)")

var ts = timestamppb.New(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))

func q(v, u string) *pb.Quantity { return &pb.Quantity{Value: v, Unit: u} }

// V1Events has one event of every payload type of protocol version 1.
func v1Events() []*pb.Event {
	base := func(seq uint64, typ string) *pb.Event {
		return &pb.Event{
			Id: fmt.Sprintf("0194f3a0-0000-7000-8000-%012d", seq), Sequence: seq, Plant: "DE-01",
			Source: &pb.Source{Name: "mes", Uri: "mqtt:mes/DE-01/L1/x", Kind: "mqtt"}, Type: typ,
			OccurredAt: ts, ObservedAt: ts, CorrelationId: "corr-1", SchemaVersion: 1,
			Attributes: map[string]string{"message_id": "m-1"},
		}
	}
	var out []*pb.Event
	add := func(typ string, set func(*pb.Event)) {
		ev := base(uint64(len(out)+1), typ)
		set(ev)
		out = append(out, ev)
	}
	add("machine.state", func(e *pb.Event) {
		e.Payload = &pb.Event_MachineState{MachineState: &pb.MachineState{WorkCenter: "L1", Machine: "M1", State: "Running", Reason: "auto"}}
	})
	add("machine.alarm", func(e *pb.Event) {
		e.Payload = &pb.Event_MachineAlarm{MachineAlarm: &pb.MachineAlarm{WorkCenter: "L1", Machine: "M1", AlarmId: "A7", Condition: "HighTemp", Severity: 700, Message: "too hot", Active: true}}
	})
	add("production.completion", func(e *pb.Event) {
		e.Payload = &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{Order: "PO-1001", Operation: "10", Item: "P-4711", WorkCenter: "L1-M1", Good: q("12", "EA"), Scrap: q("0.5", "EA"), Lot: "LOT-1"}}
	})
	add("production.order.status", func(e *pb.Event) {
		e.Payload = &pb.Event_ProductionOrderStatus{ProductionOrderStatus: &pb.ProductionOrderStatus{Order: "PO-1001", Status: "running", WorkCenter: "L1-M1"}}
	})
	add("material.consumption", func(e *pb.Event) {
		e.Payload = &pb.Event_MaterialConsumption{MaterialConsumption: &pb.MaterialConsumption{Order: "PO-1001", Item: "C-2001", Quantity: q("29.452", "KG"), Lot: "LOT-7", WorkCenter: "L1-M1"}}
	})
	add("material.shortage", func(e *pb.Event) {
		e.Payload = &pb.Event_MaterialShortage{MaterialShortage: &pb.MaterialShortage{Item: "C-2001", Quantity: q("100", "KG"), RequiredBy: ts, Order: "PO-1001", WorkCenter: "L1-M1", Warehouse: "WH1"}}
	})
	add("quality.hold", func(e *pb.Event) {
		e.Payload = &pb.Event_QualityHold{QualityHold: &pb.QualityHold{Item: "P-4711", Lot: "LOT-1", Quantity: q("12", "EA"), Reason: "visual"}}
	})
	add("schedule.change", func(e *pb.Event) {
		e.Payload = &pb.Event_ScheduleChange{ScheduleChange: &pb.ScheduleChange{Order: "PO-1001", Item: "P-4711", PreviousStart: ts, NewStart: ts, PreviousQuantity: q("10", "EA"), NewQuantity: q("12", "EA"), WorkCenter: "L1-M1", TargetPlant: "DE-02"}}
	})
	add("goods.receipt", func(e *pb.Event) {
		e.Payload = &pb.Event_GoodsReceipt{GoodsReceipt: &pb.GoodsReceipt{PurchaseOrder: "PUR-9", Item: "C-2001", Quantity: q("100", "KG"), Lot: "LOT-9", Warehouse: "WH1", Supplier: "S-1", ErpReference: "SHIP-1"}}
	})
	add("supplier.confirmation", func(e *pb.Event) {
		e.Payload = &pb.Event_SupplierConfirmation{SupplierConfirmation: &pb.SupplierConfirmation{PurchaseOrder: "PUR-9", Supplier: "S-1", Lines: []*pb.ConfirmationLine{{Line: "1", Item: "C-2001", Quantity: q("100", "KG"), PromisedDate: ts}}}}
	})
	add("po.approved", func(e *pb.Event) {
		e.Payload = &pb.Event_PoApproved{PoApproved: &pb.PoApproved{PurchaseOrder: "PUR-9", Supplier: "S-1", ErpReference: "P-9", Lines: []*pb.PoLine{{Line: "1", Item: "C-2001", Quantity: q("100", "KG"), DeliveryDate: ts}}}}
	})
	add("buffer.overflow", func(e *pb.Event) {
		e.Payload = &pb.Event_BufferOverflow{BufferOverflow: &pb.BufferOverflow{Policy: "drop_oldest", Dropped: []*pb.SequenceRange{{First: 3, Last: 9}}}}
	})
	add("source.error", func(e *pb.Event) {
		e.Payload = &pb.Event_SourceError{SourceError: &pb.SourceError{Reason: "invalid JSON at byte offset 7", Location: "topic mes/x", Raw: []byte("{bad"), QuarantineId: "q-1"}}
	})
	add("observation", func(e *pb.Event) {
		e.Payload = &pb.Event_Observation{Observation: &pb.Observation{Value: &pb.Observation_UintValue{UintValue: 42}, DataType: "UInt32", StatusCode: 0, Unit: "pcs", SourceTimestamp: ts, ServerTimestamp: ts}}
	})
	return out
}

// V1Stream is what a v1 agent sends: hello, a batch, a status report.
func v1Stream(t *testing.T) []*pb.AgentMessage {
	var raw [][]byte
	events := v1Events()
	for _, ev := range events {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, b)
	}
	return []*pb.AgentMessage{
		{Msg: &pb.AgentMessage_Hello{Hello: &pb.Hello{AgentId: "agent-1", Epoch: "01a21caa-dbfa-79e6-b894-75185e84f76a", Plant: "DE-01", AgentVersion: "v0.1.0", ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1}}},
		{Msg: &pb.AgentMessage_Batch{Batch: &pb.Batch{FirstSequence: 1, LastSequence: uint64(len(events)), Events: raw}}},
		{Msg: &pb.AgentMessage_Status{Status: &pb.AgentStatus{BufferedEvents: 14, BufferedBytes: 4096, DroppedEventsTotal: 7}}},
	}
}

func TestGoldenWireFixturesV1(t *testing.T) {
	for i, msg := range v1Stream(t) {
		bin := filepath.Join("testdata", "v1", "agent_message_"+string(rune('0'+i))+".bin")
		golden := bin[:len(bin)-4] + ".json"
		if *update {
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			j, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			_ = os.MkdirAll(filepath.Dir(bin), 0o755)
			if err := os.WriteFile(bin, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(golden, append(j, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := os.ReadFile(bin)
		if err != nil {
			t.Fatalf("%v (run with -update once to create a new fixture)", err)
		}
		var got pb.AgentMessage
		if err := proto.Unmarshal(raw, &got); err != nil {
			t.Fatalf("%s: a v1 message no longer decodes: %v", bin, err)
		}
		if !proto.Equal(&got, msg) {
			t.Fatalf("%s decodes differently from what v1 meant:\n got %v\nwant %v", bin, &got, msg)
		}
		// Events inside batches must decode to the same typed payloads.
		if b := got.GetBatch(); b != nil {
			for j, rawEv := range b.GetEvents() {
				var ev pb.Event
				if err := proto.Unmarshal(rawEv, &ev); err != nil {
					t.Fatalf("%s event %d: %v", bin, j, err)
				}
				if !proto.Equal(&ev, v1Events()[j]) {
					t.Fatalf("%s event %d (%s) decodes differently", bin, j, ev.GetType())
				}
				if ev.GetPayload() == nil {
					t.Fatalf("%s event %d (%s) lost its payload", bin, j, ev.GetType())
				}
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		var fromJSON pb.AgentMessage
		if err := protojson.Unmarshal(want, &fromJSON); err != nil {
			t.Fatalf("%s: %v", golden, err)
		}
		if !proto.Equal(&fromJSON, &got) {
			t.Fatalf("%s and %s disagree", bin, golden)
		}
	}
}
