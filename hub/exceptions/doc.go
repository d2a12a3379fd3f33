// Package exceptions keeps what the pipeline could not turn into outbox
// entries, with the reason, so nothing disappears silently: an event that
// fails its schema or a rule, a code missing from a crosswalk, an
// operational report (buffer overflow, source error), or a delivery that
// failed for good. An operator fixes the cause (e.g. adds a crosswalk row)
// and replays; a replay yields each outbox entry exactly once, however
// often it is pressed, because the exception records which idempotency
// keys already left and is resolved in the same transaction as the replay's
// entries.
//
// Data path: pipeline ─▶ exceptions ─▶ (replay) ─▶ pipeline ─▶ outbox.
package exceptions
