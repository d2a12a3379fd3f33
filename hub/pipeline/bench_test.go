package pipeline

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/hub/journal"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// benchEvents is a mix over the shipped workflows, every code mapped
// through inbound and outbound crosswalks (testdata), rules and holds
// evaluated: per 10 events 3 completions, 2 shortages, 1 order status, 1
// schedule change, 1 goods receipt, 1 approved PO, 1 supplier confirmation
// (15 outbox entries).
func benchEvents(n int) []*pb.Event {
	at := timestamppb.New(clockAt.Add(-time.Hour))
	day := func(d int) *timestamppb.Timestamp {
		return timestamppb.New(clockAt.Add(time.Duration(d) * 24 * time.Hour))
	}
	q := func(v, u string) *pb.Quantity { return &pb.Quantity{Value: v, Unit: u} }
	out := make([]*pb.Event, n)
	for i := range n {
		ev := &pb.Event{Id: fmt.Sprintf("bench-%08d", i), Plant: "DE-01", OccurredAt: at, ObservedAt: at, SchemaVersion: 1,
			CorrelationId: uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint(i))).String(), Source: &pb.Source{Name: "mes", Kind: "mqtt", Uri: "mqtt:mes/DE-01/L1/x"}}
		order := fmt.Sprintf("PO-%d", 1000+i%50)
		switch i % 10 {
		case 0, 1, 2:
			ev.Type = "production.completion"
			ev.Payload = &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{Order: order, Item: "P-4711", WorkCenter: "L1-M1", Good: q("2", "BOX"), Lot: "LOT-1"}}
		case 3, 4:
			ev.Type = "material.shortage"
			ev.Payload = &pb.Event_MaterialShortage{MaterialShortage: &pb.MaterialShortage{Item: "C-2001", Quantity: q("17.962", "LB"), RequiredBy: day(3), Order: order, WorkCenter: "L1-M2"}}
		case 5:
			ev.Type = "production.order.status"
			ev.Payload = &pb.Event_ProductionOrderStatus{ProductionOrderStatus: &pb.ProductionOrderStatus{Order: order, Status: "running", WorkCenter: "L1-M1"}}
		case 6:
			ev.Type = "schedule.change"
			ev.Payload = &pb.Event_ScheduleChange{ScheduleChange: &pb.ScheduleChange{Order: order, Item: "P-4711", PreviousStart: day(2), NewStart: timestamppb.New(day(2).AsTime().Add(3 * time.Hour)),
				PreviousQuantity: q("100", "EA"), NewQuantity: q("104", "EA"), WorkCenter: "L1-M1"}}
		case 7:
			ev.Type = "goods.receipt"
			ev.Payload = &pb.Event_GoodsReceipt{GoodsReceipt: &pb.GoodsReceipt{PurchaseOrder: "PUR-9", Item: "C-2001", Quantity: q("12.5", "KG"), Lot: "LOT-9", Warehouse: "WH1", Supplier: "S-1"}}
		case 8:
			ev.Type = "po.approved"
			ev.Payload = &pb.Event_PoApproved{PoApproved: &pb.PoApproved{PurchaseOrder: fmt.Sprintf("PUR-%d", i), Supplier: "S-1", Lines: []*pb.PoLine{{Line: "1", Item: "C-2001", Quantity: q("100", "KG"), DeliveryDate: day(9)}}}}
		case 9:
			ev.Type = "supplier.confirmation"
			ev.Payload = &pb.Event_SupplierConfirmation{SupplierConfirmation: &pb.SupplierConfirmation{PurchaseOrder: fmt.Sprintf("PUR-%d", i-1), Supplier: "S-1",
				Lines: []*pb.ConfirmationLine{{Line: "1", Item: "C-2001", Quantity: q("100", "KG"), PromisedDate: day(10)}}}}
		}
		out[i] = ev
	}
	return out
}

// BenchmarkPipeline measures journal → outbox throughput: the shipped
// workflows with crosswalk lookups, CEL rules and approval thresholds,
// bbolt with fsync on (no NoSync), batches of 1000 per commit. Delivery is
// not running, so the figure is the pipeline's alone. Run with e.g.
//
//	go test -run XXX -bench BenchmarkPipeline -benchtime 200000x ./hub/pipeline
func BenchmarkPipeline(b *testing.B) {
	dir := b.TempDir()
	j, err := journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(dir, "journal.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	evs := benchEvents(b.N)
	var last uint64
	for lo := 0; lo < len(evs); lo += 2000 {
		batch := &journal.Batch{Producer: "agent:bench", Epoch: "e1"}
		for i := lo; i < min(lo+2000, len(evs)); i++ {
			raw, _ := proto.Marshal(evs[i])
			batch.Events = append(batch.Events, journal.Incoming{Sequence: uint64(i + 1), ID: evs[i].GetId(), Raw: raw})
			batch.LastSequence = uint64(i + 1)
		}
		o, err := j.Commit(context.Background(), batch)
		if err != nil || o.Journaled != len(batch.Events) {
			b.Fatalf("journal: %+v %v", o, err)
		}
		last = o.Results[len(o.Results)-1].Position
	}
	p, err := New(Options{Config: testConfig(), Dir: dir, Journal: j, Destinations: testDests(), Now: func() time.Time { return clockAt }})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Shutdown(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	go func() { p.run(ctx); close(done) }()
	for p.Status().Cursor < last {
		time.Sleep(500 * time.Microsecond)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	b.StopTimer()
	cancel()
	<-done
	if d := p.Status().Degraded; d != "" {
		b.Fatal(d)
	}
	if n, _ := p.Exceptions().List(exceptionsAll()); len(n) > 0 {
		b.Fatalf("%d exceptions, first: %s", len(n), n[0].Reason)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	// CPU per event holds up on a busy machine where wall time does not;
	// 2 cores / CPU per event is the CPU-bound ceiling.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/event")
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkProcess is the CPU cost of one event's pipeline step (decode,
// validate, canonicalize, rules, documents, encoding), without storage.
func BenchmarkProcess(b *testing.B) {
	set, p := testSet(b)
	evs := benchEvents(100)
	recs := make([]journal.Record, len(evs))
	for i, ev := range evs {
		raw, _ := proto.Marshal(ev)
		recs[i] = journal.Record{Position: uint64(i + 1), EventID: ev.GetId(), Event: raw}
	}
	b.ReportAllocs()
	i := 0
	cpu0 := cpuTime()
	for b.Loop() {
		if r := p.process(recs[i%len(recs)], set, clockAt, 0); r.exc != nil {
			b.Fatal(r.exc.Reason)
		}
		i++
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}
