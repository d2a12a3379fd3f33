package buffer

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// BenchmarkBufferAppend measures durable appends (group commit, fsync
// included) of about 200-byte events, 500 per append and 16 appends in
// flight, as the generator source makes them. One op is one append.
func BenchmarkBufferAppend(b *testing.B) {
	buf, err := Open(filepath.Join(b.TempDir(), "buffer.db"), NewDefaultConfig(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer buf.Close()
	const perAppend = 500
	now := timestamppb.Now()
	event := func(pad string) *pb.Event {
		id, _ := uuid.NewV7()
		ev := &pb.Event{
			Id: id.String(), Plant: "DE-01", Type: "production.completion",
			Source:     &pb.Source{Name: "bench", Kind: "generator", Uri: "generator:bench"},
			OccurredAt: now, ObservedAt: now, SchemaVersion: 1,
			Payload: &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{
				Order: "PO-1001", Item: "P-4711", WorkCenter: "L1-M1", Good: &pb.Quantity{Value: "1", Unit: "EA"},
			}},
		}
		if pad != "" {
			ev.Attributes = map[string]string{"pad": pad}
		}
		return ev
	}
	// Padded to 200 encoded bytes the way the generator source pads.
	pad := strings.Repeat("x", max(0, 200-proto.Size(event(""))-10))
	if size := proto.Size(event(pad)); size < 190 || size > 210 {
		b.Fatalf("event is %d bytes, want about 200", size)
	}
	inflight := make(chan struct{}, 16)
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		events := make([]*pb.Event, perAppend)
		for i := range events {
			events[i] = event(pad)
		}
		inflight <- struct{}{}
		wg.Add(1)
		err := buf.AppendAsync(context.Background(), events, func(_, _ uint64, err error) {
			defer wg.Done()
			<-inflight
			if err != nil {
				b.Error(err)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.ReportMetric(float64(b.N*perAppend)/b.Elapsed().Seconds(), "events/s")
}
