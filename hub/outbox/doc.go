// Package outbox is the hub's durable queue of actions waiting for delivery,
// one ordered stream per destination. The pipeline appends an entry for
// every action a workflow yields, in the same bbolt transaction that moves
// its journal cursor, so a crash never skips or doubles an entry. The
// delivery engine (connectors) reads Pending entries in order per ordering
// key and records outcomes with Complete.
//
// Data path: pipeline ─▶ outbox ─▶ delivery (connector, or the built-in log
// and alerts destinations) ─▶ ERP / portal / planning.
//
// Every entry carries an idempotency key derived from event id, destination
// and action (IdempotencyKey): connectors write it into the target document
// and look it up before creating, so a retry after an uncertain attempt
// never creates a second document.
//
// Keys are per-destination sequence numbers, so appends are sequential
// B-tree inserts; random keys (such as the idempotency key itself) measured
// seven times slower on this kind of machine and degrade as the file grows.
package outbox
