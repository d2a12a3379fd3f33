// Command webhook is the webhook destination plugin: it delivers each
// outbox entry as an HTTP(S) POST of JSON to a supplier portal, a planning
// system or any other HTTP target, with an Idempotency-Key header and an
// HMAC-SHA256 signature, and maps the target's status codes to ok,
// retryable or permanent. An optional lookup URL lets Lookup find a
// delivered document by its idempotency key. See README.md.
//
// Data path: hub delivery engine ─▶ plugins/sdk host ─▶ this process ─▶ HTTP target.
package main
