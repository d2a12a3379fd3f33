// Package delivery is the hub's delivery engine: it reads the outbox of
// every connector destination and hands each entry to the destination's
// connector plugin, exactly once in effect.
//
// Data path: pipeline ─▶ outbox ─▶ delivery (this package) ─▶ connector
// plugin (plugins/sdk host) ─▶ ERP / portal / planning.
//
// Per destination an Engine delivers entries with different ordering keys
// in parallel and entries with the same key strictly in outbox order. A
// failed attempt is retried with exponential backoff and jitter up to a
// limit, honouring the target's Retry-After; a circuit breaker stops
// hammering a target that keeps failing. Permanent refusals and exhausted
// retries are recorded as failed, which parks them as replayable
// exceptions; a parked entry holds back the later entries of its ordering
// key until it is replayed or its exception is resolved otherwise.
//
// Exactly once in effect: before an entry can be attempted, the Ledger (a
// bbolt file next to the outbox) durably records that an attempt may
// start. After any attempt whose outcome is unknown (a timeout, a
// transport error, a crashed plugin, or a hub that died with the entry
// recorded in the ledger) the engine asks the connector's Lookup before
// delivering again, and a document found there counts as delivered. See
// README.md for the rules and their reasons.
package delivery
