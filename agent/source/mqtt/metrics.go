package mqtt

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of one source. The agent's registerer labels them source=<name>.
type metrics struct {
	connected         prometheus.Gauge
	received          prometheus.Counter
	mapped            prometheus.Counter
	quarantined       prometheus.Counter
	quarantineEvicted prometheus.Counter
	duplicates        prometheus.Counter
	dropped           prometheus.Counter
	reconnects        prometheus.Counter
	rebirths          prometheus.Counter
	seqGaps           prometheus.Counter
	errors            *prometheus.CounterVec
	ackLatency        prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, s *Source) (*metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_mqtt_" + name, Help: help})
	}
	m := &metrics{
		connected:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "plantsync_agent_mqtt_connected", Help: "1 while connected to a broker and subscribed."}),
		received:          counter("received_total", "Messages received from the broker (redeliveries included)."),
		mapped:            counter("mapped_total", "Canonical events committed to the buffer from messages."),
		quarantined:       counter("quarantined_total", "Messages that could not be decoded or mapped, quarantined and reported as source.error."),
		quarantineEvicted: counter("quarantine_evicted_total", "Quarantine entries deleted to stay within quarantine_max_entries."),
		duplicates:        counter("duplicates_total", "Messages recognised as redeliveries (content-hash window hits, repeated Sparkplug sequence numbers)."),
		dropped:           counter("dropped_total", "Messages acknowledged without an event because drop_if was true."),
		reconnects:        counter("reconnects_total", "Connections lost and re-established."),
		rebirths:          counter("sparkplug_rebirth_requests_total", "Sparkplug NCMD rebirth requests sent to edge nodes."),
		seqGaps:           counter("sparkplug_sequence_gaps_total", "Sparkplug messages whose sequence number skipped ahead."),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_agent_mqtt_errors_total",
			Help: "Errors by kind (connect, subscribe, buffer, quarantine, publish)."}, []string{"kind"}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "plantsync_agent_mqtt_ack_latency_seconds",
			Help:    "Time from receiving a message to acknowledging it to the broker (its buffer commit included).",
			Buckets: prometheus.ExponentialBuckets(0.00025, 1.5, 24)}),
	}
	for _, k := range []string{"connect", "subscribe", "buffer", "quarantine", "publish"} {
		m.errors.WithLabelValues(k)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.connected, m.received, m.mapped, m.quarantined, m.quarantineEvicted, m.duplicates,
		m.dropped, m.reconnects, m.rebirths, m.seqGaps, m.errors, m.ackLatency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "plantsync_agent_mqtt_quarantine_entries", Help: "Messages in the quarantine."},
			func() float64 {
				s.mu.Lock()
				q := s.q
				stopped := s.stopped
				s.mu.Unlock()
				if q == nil || stopped {
					return 0
				}
				return float64(q.count())
			}),
	}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errors.Join(errs...)
}
