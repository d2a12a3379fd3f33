package ingest

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	streams      prometheus.Gauge
	batches      prometheus.Counter
	events       *prometheus.CounterVec
	streamErrors *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "plantsync_hub_ingest_streams", Help: "Open agent streams."}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "plantsync_hub_ingest_batches_total", Help: "Batches received from agents."}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plantsync_hub_ingest_events_total", Help: "Events received from agents by result (journaled, duplicate, rejected)."}, []string{"result"}),
		streamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plantsync_hub_ingest_stream_errors_total", Help: "Agent streams refused or broken, by kind."}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.streams, m.batches, m.events, m.streamErrors)
	}
	return m
}
