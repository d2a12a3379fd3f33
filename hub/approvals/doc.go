// Package approvals holds actions that an approval rule stopped for review
// (e.g. a schedule change moving a start by more than two days) and keeps
// order while they wait: a held action blocks every later action with the
// same destination and ordering key, which queue behind it. Approving
// releases the action and then everything behind it, in order, up to the
// next held one; rejecting drops the action (it never leaves) and releases
// the rest.
//
// Data path: pipeline ─▶ approval hold ─▶ (decision) ─▶ outbox.
package approvals
