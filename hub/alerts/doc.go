// Package alerts is the hub's built-in `alerts` destination: workflow
// actions `alert.raise` (material shortages, quality holds, buffer
// overflows, source errors) are delivered here from the outbox and kept
// durably until someone acknowledges them. The HTTP API lists them at
// GET /api/v1/alerts and acknowledges with POST /api/v1/alerts/{id}/ack;
// metrics count them; the dashboard shows them.
//
// Data path: pipeline ─▶ outbox (alerts) ─▶ alerts store ─▶ API, dashboard.
package alerts
