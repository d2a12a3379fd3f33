// Command tryton is the Tryton destination plugin: it delivers outbox
// entries to a Tryton 6.0 ERP over its JSON-RPC API. A purchase requisition
// becomes a purchase.request whose description carries the idempotency key,
// and Lookup searches for it, so a delivery repeated after a crash finds the
// first document instead of creating a second (Tryton has no unique
// external key; the hub's per-key ordering serialises search-then-create).
// Production order and purchase order updates set values, so repeating them
// is harmless; their Lookup compares Tryton's current values. See README.md.
//
// Data path: hub delivery engine ─▶ plugins/sdk host ─▶ this process ─▶ Tryton JSON-RPC.
package main
