// Package ingest is the hub's gRPC endpoint for agents: it authenticates each
// agent by its client certificate (TLS 1.3, mTLS), answers Hello with the
// resume point of that agent's instance epoch, hands batches to the journal
// and sends cumulative acks only after the journal has committed them.
//
// Data path: agent uplink ─▶ ingest ─▶ journal.
package ingest
