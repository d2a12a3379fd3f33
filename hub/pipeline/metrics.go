package pipeline

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantsync/plantsync/hub/alerts"
)

// metrics follow STYLE.md: plantsync_hub_<subsystem>_<name>, labels bounded
// (destination names, exception kinds, severities).
type metrics struct {
	processed  prometheus.Counter
	exceptions *prometheus.CounterVec
	replays    *prometheus.CounterVec
	commitSecs prometheus.Histogram
	delivered  *prometheus.CounterVec
	// outboxPruned and tracePruned count what retention deleted.
	outboxPruned *prometheus.CounterVec
	tracePruned  prometheus.Counter
	// resolvedPruned counts exceptions, approvals and alerts retention
	// deleted.
	resolvedPruned *prometheus.CounterVec
	p              *Pipeline
}

func newMetrics(reg prometheus.Registerer, p *Pipeline) *metrics {
	m := &metrics{
		p: p,
		processed: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_hub_pipeline_processed_total",
			Help: "Journaled events the pipeline processed since start."}),
		exceptions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_hub_pipeline_exceptions_total",
			Help: "Exceptions raised since start, by kind (unmapped_item, validation, rule, buffer_overflow, delivery, ...)."}, []string{"kind"}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_hub_pipeline_replays_total",
			Help: "Exception replays since start, by outcome."}, []string{"outcome"}),
		commitSecs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "plantsync_hub_pipeline_commit_seconds",
			Help: "Time to commit one batch (outbox entries, exceptions, cursor; one fsync).", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_hub_builtin_delivered_total",
			Help: "Entries delivered by the built-in destinations (log, alerts), by destination."}, []string{"destination"}),
		outboxPruned: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_hub_outbox_pruned_total",
			Help: "Delivered outbox entries deleted by storage.outbox_retention since start, by destination."}, []string{"destination"}),
		tracePruned: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_hub_trace_pruned_total",
			Help: "Trace entries deleted since start because journal retention pruned their events."}),
		resolvedPruned: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_hub_resolved_pruned_total",
			Help: "Resolved exceptions, decided approvals and acknowledged alerts deleted by storage.resolved_retention since start, by kind."}, []string{"kind"}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(m.processed, m.exceptions, m.replays, m.commitSecs, m.delivered, m.outboxPruned, m.tracePruned, m.resolvedPruned,
		gauge("plantsync_hub_pipeline_cursor", "Last journal position the pipeline committed.", func() float64 { return float64(p.cursor.Load()) }),
		gauge("plantsync_hub_pipeline_lag_events", "Journaled events the pipeline has not processed yet.", func() float64 { return float64(p.Status().Lag) }),
		gauge("plantsync_hub_approvals_pending", "Actions held for approval.", func() float64 { return float64(p.approvals.PendingCount()) }),
		gauge("plantsync_hub_exceptions_open", "Open exceptions.", func() float64 { return float64(p.exceptions.OpenCount()) }),
		gauge("plantsync_hub_alerts_open", "Unacknowledged alerts.", func() float64 { return float64(p.alerts.OpenCount()) }),
		&depthCollector{p: p, desc: prometheus.NewDesc("plantsync_hub_outbox_depth", "Outbox entries waiting for delivery, by destination.", []string{"destination"}, nil)},
		&alertsCollector{p: p, desc: prometheus.NewDesc("plantsync_hub_alerts_raised_total", "Alerts raised since start, by severity.", []string{"severity"}, nil)},
	)
	return m
}

func (m *metrics) committed(b batch, d time.Duration) {
	n := 0
	for _, r := range b.results {
		if r.pos > 0 {
			n++
		}
	}
	m.processed.Add(float64(n))
	m.commitSecs.Observe(d.Seconds())
	m.syncExceptions()
}

func (m *metrics) syncExceptions() {
	for k, n := range m.p.exceptions.TakeCreated() {
		m.exceptions.WithLabelValues(k).Add(float64(n))
	}
}

func (m *metrics) replayed(rs []ReplayResult) {
	for _, r := range rs {
		m.replays.WithLabelValues(r.Outcome).Inc()
	}
	m.syncExceptions()
}

type depthCollector struct {
	p    *Pipeline
	desc *prometheus.Desc
}

func (c *depthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *depthCollector) Collect(ch chan<- prometheus.Metric) {
	for _, d := range c.p.outbox.Destinations() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(c.p.outbox.Depth(d)), d)
	}
}

type alertsCollector struct {
	p    *Pipeline
	desc *prometheus.Desc
}

func (c *alertsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *alertsCollector) Collect(ch chan<- prometheus.Metric) {
	raised := c.p.alerts.RaisedTotal()
	for _, s := range []alerts.Severity{alerts.SeverityInfo, alerts.SeverityWarning, alerts.SeverityCritical} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(raised[s]), string(s))
	}
}
