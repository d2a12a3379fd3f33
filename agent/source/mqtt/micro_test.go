package mqtt

import (
	"testing"
	"time"
)

// BenchmarkHandleJSON is the source's own per-message work for a JSON MES
// message: decode, map, build the event, hand it to the sink.
func BenchmarkHandleJSON(b *testing.B) {
	sink := &recordingSink{}
	cfg := NewDefaultConfig()
	cfg.Subscriptions = []Subscription{completionSub()}
	s := offlineSource(b, cfg, sink)
	p := completionJSON("bench-000000001")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.handle(inMsg{topic: "mes/DE-01/L1/completion", payload: p, qos: 1, received: time.Now()}, false, func(result) {})
		sink.take()
	}
}
