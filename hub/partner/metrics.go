package partner

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// unknownPartner labels requests for a partner name that is not
// configured: names come from the URL, so only configured ones may become
// label values. It cannot collide with a configured name (those start with
// a letter).
const unknownPartner = "_unknown"

type metrics struct {
	requests    *prometheus.CounterVec
	events      *prometheus.CounterVec
	forbidden   *prometheus.CounterVec
	authFailed  *prometheus.CounterVec
	rateLimited *prometheus.CounterVec
	duration    *prometheus.HistogramVec
}

// Result labels of plantsync_hub_partner_events_total.
const (
	resultAccepted  = "accepted"
	resultDuplicate = "duplicate"
	resultRejected  = "rejected"
)

// Reasons of plantsync_hub_partner_auth_failures_total.
const (
	authMissing     = "missing_credentials"
	authToken       = "token"
	authCertificate = "certificate"
	authSignature   = "signature"
	authUnknown     = "unknown_partner"
)

func newMetrics(reg prometheus.Registerer, names []string) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plantsync_hub_partner_requests_total", Help: "Partner ingestion requests by partner and HTTP status code."}, []string{"partner", "code"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plantsync_hub_partner_events_total", Help: "Events posted by partners, by result (accepted, duplicate, rejected)."}, []string{"partner", "result"}),
		forbidden: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plantsync_hub_partner_forbidden_events_total", Help: "Events refused with 403 because the partner may not send their type or plant, by field."}, []string{"partner", "field"}),
		authFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plantsync_hub_partner_auth_failures_total", Help: "Partner requests refused with 401, by reason."}, []string{"partner", "reason"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "plantsync_hub_partner_rate_limited_total", Help: "Partner requests refused with 429."}, []string{"partner"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "plantsync_hub_partner_request_seconds", Help: "Time from request to answer for authenticated partner requests, journal commit included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"partner"}),
	}
	// Known series start at zero, so rates and alerts work from the first
	// scrape.
	for _, n := range names {
		for _, r := range []string{resultAccepted, resultDuplicate, resultRejected} {
			m.events.WithLabelValues(n, r)
		}
		m.forbidden.WithLabelValues(n, "type")
		m.forbidden.WithLabelValues(n, "plant")
		m.rateLimited.WithLabelValues(n)
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.events, m.forbidden, m.authFailed, m.rateLimited, m.duration)
	}
	return m
}

func (m *metrics) request(partner string, code int) {
	m.requests.WithLabelValues(partner, strconv.Itoa(code)).Inc()
}
