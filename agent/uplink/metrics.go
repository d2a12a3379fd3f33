package uplink

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connected    prometheus.Gauge
	reconnects   prometheus.Counter
	sentBatches  prometheus.Counter
	sentEvents   prometheus.Counter
	ackedBatches prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "plantsync_agent_uplink_connected", Help: "1 while the stream to the hub is open."}),
		reconnects:   prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_uplink_reconnects_total", Help: "Streams to the hub that ended and were retried."}),
		sentBatches:  prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_uplink_sent_batches_total", Help: "Batches sent to the hub (resends included)."}),
		sentEvents:   prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_uplink_sent_events_total", Help: "Events sent to the hub (resends included)."}),
		ackedBatches: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_uplink_acked_batches_total", Help: "Batches the hub acknowledged as committed."}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.reconnects, m.sentBatches, m.sentEvents, m.ackedBatches)
	}
	return m
}
