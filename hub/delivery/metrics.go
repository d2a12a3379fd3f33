package delivery

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the engines' Prometheus collectors, labelled by destination
// (a configured name, so bounded). The outbox depth per destination is the
// pipeline's plantsync_hub_outbox_depth.
type Metrics struct {
	delivered *prometheus.CounterVec
	retried   *prometheus.CounterVec
	failed    *prometheus.CounterVec
	lookups   *prometheus.CounterVec
	attempt   *prometheus.HistogramVec
	latency   *prometheus.HistogramVec
	breaker   *prometheus.GaugeVec
	blocked   *prometheus.GaugeVec
}

// NewMetrics registers the collectors with reg; one value serves every
// engine of a hub.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns, sub = "plantsync_hub", "delivery"
	dest := []string{"destination"}
	m := &Metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "delivered_total",
			Help: "Outbox entries delivered by connector destinations (including those found by Lookup after an uncertain attempt)."}, dest),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "retried_total",
			Help: "Failed attempts that will be retried."}, dest),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "failed_total",
			Help: "Entries parked as delivery exceptions (permanent refusal or retries exhausted)."}, dest),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lookups_total",
			Help: "Lookups before delivering again after an uncertain attempt, by result (found, not_found, unknown, error)."}, []string{"destination", "result"}),
		attempt: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "attempt_duration_seconds",
			Help:    "Duration of one Deliver call into the connector.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, dest),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "latency_seconds",
			Help:    "Time from an entry entering the outbox to its delivery being recorded.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}}, dest),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "breaker_state",
			Help: "Circuit breaker of the destination: 0 closed, 1 half-open (probing), 2 open."}, dest),
		blocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "blocked_keys",
			Help: "Ordering keys held back behind a parked (failed) entry until it is replayed or resolved."}, dest),
	}
	for _, c := range []prometheus.Collector{m.delivered, m.retried, m.failed, m.lookups, m.attempt, m.latency, m.breaker, m.blocked} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// destMetrics are one destination's children, resolved once.
type destMetrics struct {
	delivered, retried, failed prometheus.Counter
	attempt, latency           prometheus.Observer
	breaker, blocked           prometheus.Gauge
	lookups                    *prometheus.CounterVec
	dest                       string
}

func (m *Metrics) forDest(dest string) *destMetrics {
	if m == nil {
		var err error
		if m, err = NewMetrics(prometheus.NewRegistry()); err != nil {
			return nil // unreachable: a fresh registry has no conflicts
		}
	}
	return &destMetrics{
		delivered: m.delivered.WithLabelValues(dest), retried: m.retried.WithLabelValues(dest), failed: m.failed.WithLabelValues(dest),
		attempt: m.attempt.WithLabelValues(dest), latency: m.latency.WithLabelValues(dest),
		breaker: m.breaker.WithLabelValues(dest), blocked: m.blocked.WithLabelValues(dest),
		lookups: m.lookups, dest: dest,
	}
}

func (d *destMetrics) lookup(result string) { d.lookups.WithLabelValues(d.dest, result).Inc() }
