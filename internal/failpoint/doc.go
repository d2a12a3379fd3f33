// Package failpoint places named crash and fault points in plantsync's code
// so that a test can kill a process exactly between two steps — after a
// bbolt commit but before the ack, after a delivery but before the journal
// mark — and then check that nothing was lost or duplicated.
//
// Call sites look like
//
//	failpoint.Inject("hub/delivery/after-deliver")
//	if err := failpoint.Error("agent/buffer/before-commit"); err != nil {
//		return fmt.Errorf("commit batch: %w", err)
//	}
//
// In normal builds Inject is an empty function that the compiler inlines
// away, Error returns nil and Enabled reports false: failpoints cost nothing
// in a release binary. Built with -tags failpoints, each call consults the
// PLANTSYNC_FAILPOINTS environment variable (see README.md for its format).
//
// # Naming
//
// A failpoint name is component/step, lowercase, words joined by hyphens:
// the first segments say where the code lives (agent/buffer, hub/delivery,
// hub/journal), the last says which moment it marks, relative to the
// operation it follows or precedes: before-commit, after-commit,
// after-deliver, before-ack. For example
//
//	agent/buffer/after-commit
//	agent/uplink/before-ack
//	hub/journal/after-append
//	hub/delivery/after-deliver
//
// A name marks exactly one place in the code; tests refer to it by that
// string, so renaming a failpoint is a change to the tests too.
package failpoint
