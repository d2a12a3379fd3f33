// Package partner is the hub's ingestion API for systems outside the plant
// floor — a supplier portal, a warehouse system, an ERP that pushes — that
// send canonical events over HTTP: POST /api/v1/ingest/{partner}.
//
// Data path: partner ─▶ HTTP listener ─▶ partner (authn/authz, decode,
// schema) ─▶ journal ─▶ pipeline. The same journal, dedup, validation,
// lineage and workflows apply as to agent events.
//
// Each partner is configured under `partners` in the hub config with the
// event types and plants it may send and how it authenticates: a bearer
// token read from a file (only its SHA-256 is kept and compared, in
// constant time), a client certificate on the HTTP listener's TLS
// (http.tls.client_ca), or both; an HMAC-SHA256 signature over the raw body
// is checked where configured. Each partner has its own rate limit.
//
// Identity is born once: every event carries the partner's own id, and the
// event id is derived from (partner, that id) (EventID), so a resent event
// is journaled once and answered as a duplicate. The answer lists a result
// per event and is written only after the accepted events are committed to
// the journal (fsync'd): a partner that got an answer may forget the event,
// and a partner that got none resends it safely.
package partner
