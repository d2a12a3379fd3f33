package mqtt

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkSourceThroughput pushes QoS 1 JSON messages through an
// in-process mochi broker into the source and a real buffer (fsync'd
// commits), and reports messages/s until the last acknowledgement. The
// buffer is acknowledged as it goes, as the uplink would.
//
//	go test -run XXX -bench SourceThroughput -benchtime 100000x -cpuprofile cpu.out ./agent/source/mqtt/
func BenchmarkSourceThroughput(b *testing.B) {
	mb, addr := startBroker(b)
	mb.Options.Capabilities.MaximumClientWritesPending = 1 << 20
	mb.Options.Capabilities.MaximumInflight = 65535
	buf := openBuffer(b, b.TempDir())
	cfg := baseConfig(addr, completionSub())
	s, reg := testSource(b, cfg, buf, b.TempDir())
	waitRunning(b, s)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the uplink's part: acknowledge what is committed
		for {
			select {
			case <-stop:
				return
			case <-buf.Changed():
				buf.Ack(buf.Stats().LastSeq)
			}
		}
	}()
	pub := testPublisher(b, addr)
	payloads := make([][]byte, b.N)
	for i := range payloads {
		payloads[i] = completionJSON(fmt.Sprintf("bench-%09d", i))
	}
	b.ResetTimer()
	start := time.Now()
	go func() {
		for _, p := range payloads {
			pub.Publish("mes/DE-01/L1/completion", 1, false, p)
		}
	}()
	eventually(b, 5*time.Minute, "every message acknowledged", func() bool {
		return metricValue(b, reg, "plantsync_agent_mqtt_ack_latency_seconds") >= float64(b.N)
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
}
