package sdk

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics receives what a host observes of its plugins. Implementations
// must be safe for concurrent use; NewPrometheusMetrics is the usual one.
type Metrics interface {
	// Call is one call into the plugin. result is bounded: "ok", "error",
	// "unavailable", or for Deliver the outcome ("ok", "retryable",
	// "permanent").
	Call(plugin, method, result string, took time.Duration)
	// Restarted counts a restart after the plugin process died.
	Restarted(plugin string)
	// Up reports whether the plugin process runs.
	Up(plugin string, up bool)
}

// PrometheusMetrics implements Metrics with Prometheus collectors named
// <namespace>_plugin_calls_total{plugin,method,result},
// <namespace>_plugin_call_duration_seconds{plugin,method},
// <namespace>_plugin_restarts_total{plugin} and <namespace>_plugin_up{plugin}.
type PrometheusMetrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	restarts *prometheus.CounterVec
	up       *prometheus.GaugeVec
}

// NewPrometheusMetrics registers the collectors with reg; namespace is
// "plantsync_hub" or "plantsync_agent". One value serves every plugin of a
// process (the plugin label is the configured name).
func NewPrometheusMetrics(reg prometheus.Registerer, namespace string) (*PrometheusMetrics, error) {
	m := &PrometheusMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "plugin", Name: "calls_total",
			Help: "Calls into connector plugins by method and result."}, []string{"plugin", "method", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Subsystem: "plugin", Name: "call_duration_seconds",
			Help:    "Duration of calls into connector plugins.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"plugin", "method"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: "plugin", Name: "restarts_total",
			Help: "Restarts of connector plugin processes after they died."}, []string{"plugin"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "plugin", Name: "up",
			Help: "1 while the connector plugin process runs."}, []string{"plugin"}),
	}
	for _, c := range []prometheus.Collector{m.calls, m.duration, m.restarts, m.up} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Call implements Metrics.
func (m *PrometheusMetrics) Call(plugin, method, result string, took time.Duration) {
	m.calls.WithLabelValues(plugin, method, result).Inc()
	m.duration.WithLabelValues(plugin, method).Observe(took.Seconds())
}

// Restarted implements Metrics.
func (m *PrometheusMetrics) Restarted(plugin string) { m.restarts.WithLabelValues(plugin).Inc() }

// Up implements Metrics.
func (m *PrometheusMetrics) Up(plugin string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.up.WithLabelValues(plugin).Set(v)
}

type noMetrics struct{}

func (noMetrics) Call(string, string, string, time.Duration) {}
func (noMetrics) Restarted(string)                           {}
func (noMetrics) Up(string, bool)                            {}
