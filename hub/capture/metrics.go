package capture

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the capture metrics, labelled by destination.
type Metrics struct {
	changes  *prometheus.CounterVec
	events   *prometheus.CounterVec
	polls    *prometheus.CounterVec
	errors   *prometheus.CounterVec
	lastPoll *prometheus.GaugeVec
}

// NewMetrics registers the capture metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_hub_capture_changes_total",
			Help: "Changes read from a destination, by outcome (captured, own: written by plantsync, skipped: unreadable)."}, []string{"destination", "outcome"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_hub_capture_events_total",
			Help: "Events committed to the journal from changes, by journal status (journaled, duplicate, rejected)."}, []string{"destination", "status"}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_hub_capture_polls_total",
			Help: "Polls of a destination's changes."}, []string{"destination"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_hub_capture_errors_total",
			Help: "Failed polls and unreadable changes, by kind (changes, journal, cursor, document)."}, []string{"destination", "kind"}),
		lastPoll: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "plantsync_hub_capture_last_poll_timestamp_seconds",
			Help: "Unix time of the last completed poll of a destination."}, []string{"destination"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.changes, m.events, m.polls, m.errors, m.lastPoll} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("capture metrics: %w", err)
			}
		}
	}
	return m, nil
}
