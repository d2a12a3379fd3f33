// Package sandboxerp is the SANDBOX ERP that `make run` delivers to: not a
// real ERP, but an HTTP target that speaks the webhook plugin's protocol
// (POST of the JSON envelope with an Idempotency-Key header and an
// HMAC-SHA256 signature, lookup by idempotency key) and keeps the documents
// it receives durably in bbolt, so the demo shows requisitions appearing and
// a retried delivery never doubling a document. Real-ERP tests use Tryton
// (plugins/tryton, `make interop`).
//
// Data path: hub ─▶ webhook plugin ─▶ sandbox ERP (this) ─▶ GET /documents.
package sandboxerp
