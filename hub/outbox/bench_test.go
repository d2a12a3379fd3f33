package outbox

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// benchEntry is an entry shaped like the shipped workflows' (a
// production confirmation document with crosswalk lineage).
func benchEntry(i int) Entry {
	at := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	id := fmt.Sprintf("bench-%08d", i)
	return Entry{Destination: "log", IdempotencyKey: IdempotencyKey(id, "log", "confirm_production"), Action: "confirm_production",
		OrderingKey: "order:DE01:PO-1042",
		Document: json.RawMessage(`{"plant":"DE01","order":"PO-1042","item":"FG-4711","work_center":"WC-L1-M1","good":{"value":"24","unit":"EA"},` +
			`"scrap":{"value":"0","unit":"EA"},"lot":"LOT-1","occurred_at":"2026-11-27T09:00:00Z","correlation_id":"5f1e6a1c-0f5e-5b8e-9d3c-2a1b0c9d8e7f"}`),
		CreatedAt: at, State: StatePending,
		Lineage: Lineage{EventID: id, CorrelationID: "5f1e6a1c-0f5e-5b8e-9d3c-2a1b0c9d8e7f", EventType: "production.completion", Plant: "DE-01",
			Producer: "agent:bench", JournalPosition: uint64(i + 1), Rule: "production.completion/confirm_production@log",
			Crosswalks: map[string]uint64{"in.item": 1, "in.plant": 1, "in.unit": 1, "in.work_center": 1, "out.log.item": 1}, ProcessedAt: at}}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDeliverLog is the outbox side of the built-in log destination:
// read 500 pending entries, mark them delivered. ns/op is per entry.
func BenchmarkDeliverLog(b *testing.B) {
	for _, snapshots := range []bool{false, true} {
		b.Run(fmt.Sprintf("snapshots=%v", snapshots), func(b *testing.B) {
			db, ob := openTestOutbox(b, "log")
			const batch = 500
			fill := func() {
				err := db.Update(func(tx *bolt.Tx) error {
					app := ob.NewAppender(tx)
					for i := range batch {
						e := benchEntry(i)
						v, _ := Encode(&e)
						if _, err := app.Append("log", v); err != nil {
							return err
						}
					}
					return app.Flush()
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			at := time.Now()
			var after uint64
			b.ReportAllocs()
			var cpu time.Duration
			for i := 0; i < b.N; i += batch {
				b.StopTimer()
				fill()
				b.StartTimer()
				cpu0 := cpuTime()
				var err error
				if snapshots {
					var es []Snapshot
					es, err = ob.PendingSnapshots("log", after, batch)
					outs := make([]Outcome, len(es))
					for i := range es {
						outs[i] = Outcome{Seq: es[i].Seq, State: StateDelivered, ExternalRef: "log", Attempts: 1, At: at}
					}
					after = es[len(es)-1].Seq
					err = db.Update(func(tx *bolt.Tx) error { return ob.CompleteSnapshotsTx(tx, "log", es, outs, nil) })
				} else {
					var es []Entry
					es, err = ob.Pending("log", after, batch)
					outs := make([]Outcome, len(es))
					for i := range es {
						outs[i] = Outcome{Seq: es[i].Seq, State: StateDelivered, ExternalRef: "log", Attempts: 1, At: at}
					}
					after = es[len(es)-1].Seq
					err = ob.Complete("log", outs)
				}
				if err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - cpu0
			}
			// The fsync of each batch makes ns/op noisy; CPU is the figure.
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkDecodeEntry compares the two decoders Decode uses on a stored
// entry: segmentio's (the normal path) and encoding/json (the fallback
// that words a refusal).
func BenchmarkDecodeEntry(b *testing.B) {
	e := benchEntry(1)
	v, err := Encode(&e)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("segmentio", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := Decode(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var out Entry
			if err := json.Unmarshal(v[1:], &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
