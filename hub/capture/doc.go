// Package capture is the hub's ERP change capture: it polls every
// destination whose connector offers the "changes" capability (plugins/sdk)
// for what changed at the target since a stored cursor — a purchase order
// approved, goods received — turns each change into canonical events
// (proto/plantsync/v1) with ids derived from (destination, document,
// business event), commits them to the journal as producer
// "erp:<destination>", and only then stores the new cursor.
//
// A crash between the journal commit and the cursor store (failpoint
// hub/capture/after-journal) makes the next poll read the same page again:
// the events come with the same ids and the journal drops them as
// duplicates, so a change is repeated, never skipped. From the journal on,
// these events take the same path as agent and partner events: pipeline,
// workflows, delivery.
package capture
