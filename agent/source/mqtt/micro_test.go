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

// BenchmarkDecodePayload compares the two ways a JSON payload is read:
// encoding/json into map[string]any (every payload the fast path cannot
// take), and the fast path (json.Valid, then a pooled fastjson parse) that
// jsonfast.go describes.
func BenchmarkDecodePayload(b *testing.B) {
	cfg := NewDefaultConfig()
	cfg.Subscriptions = []Subscription{completionSub()}
	s := offlineSource(b, cfg, &recordingSink{})
	cs := s.subs[0]
	p := completionJSON("bench-000000001")
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, merr := cs.decodePayload(p); merr != nil {
				b.Fatal(merr)
			}
		}
	})
	b.Run("fast-path", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			v, parser := cs.fastDecode(p)
			if v == nil {
				b.Fatal("the fast path refused the benchmark payload")
			}
			fastParsers.Put(parser)
		}
	})
}
