package opcua

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are per configured source: the agent's registerer already
// labels them source=<name>. No label ever holds a node id.
type metrics struct {
	connected       prometheus.Gauge
	reconnects      prometheus.Counter
	connectAttempts prometheus.Counter
	items           *prometheus.GaugeVec
	subscriptions   prometheus.Gauge
	notifications   prometheus.Counter
	superseded      prometheus.Counter
	appended        prometheus.Counter
	backfilled      prometheus.Counter
	errors          *prometheus.CounterVec
}

// Error kinds of plantsync_agent_opcua_errors_total.
var errorKinds = []string{"connect", "trust", "session", "subscribe", "item", "publish", "mapping", "buffer", "history", "browse", "overflow"}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "plantsync_agent_opcua_connected",
			Help: "1 while the source has a session with its server."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_opcua_reconnects_total",
			Help: "Sessions re-established after a session or channel was lost."}),
		connectAttempts: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_opcua_connect_attempts_total",
			Help: "Attempts to open a channel and session, successful or not."}),
		items: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "plantsync_agent_opcua_monitored_items",
			Help: "Monitored items by state: good (reporting), bad (refused by the server, retried), pending (not yet created)."}, []string{"state"}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "plantsync_agent_opcua_subscriptions",
			Help: "Subscriptions of the current session."}),
		notifications: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_opcua_notifications_total",
			Help: "Value and event notifications received from the server."}),
		superseded: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_opcua_superseded_total",
			Help: "Values replaced by a newer value of the same node while the buffer was blocked (conflation)."}),
		appended: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_opcua_events_total",
			Help: "Events committed to the buffer."}),
		backfilled: prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_opcua_backfilled_total",
			Help: "Values read back with HistoryRead after a reconnect."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_agent_opcua_errors_total",
			Help: "Errors by kind: " + strings.Join(errorKinds, ", ") + "."}, []string{"kind"}),
	}
	for _, k := range errorKinds {
		m.errors.WithLabelValues(k)
	}
	for _, s := range []string{"good", "bad", "pending"} {
		m.items.WithLabelValues(s)
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.reconnects, m.connectAttempts, m.items, m.subscriptions, m.notifications, m.superseded, m.appended, m.backfilled, m.errors)
	}
	return m
}
