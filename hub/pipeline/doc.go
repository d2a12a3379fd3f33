// Package pipeline turns journaled plant events into business
// transactions under central governance. It reads the journal in position
// order and, for every event:
//
//	canonicalize (inbound crosswalks) ─▶ validate (schema, CEL rules)
//	─▶ route (workflow of the event type; CEL `when`) ─▶ documents in each
//	destination's codes (outbound crosswalks) ─▶ approval hold? ─▶ outbox
//
// Whatever cannot go on (an unmapped code, a failed rule, an operational
// report) becomes an exception with the reason; nothing is dropped. The
// journal cursor, the outbox entries, approvals and exceptions an event
// yields are committed in one bbolt transaction (pipeline.db), so a crash
// never skips or doubles an entry.
//
// Data path: ingest ─▶ journal ─▶ pipeline ─▶ outbox ─▶ delivery.
package pipeline
