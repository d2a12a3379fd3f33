// Package hub assembles plantsync-hub: agent ingest (gRPC, mTLS) ─▶ journal
// ─▶ pipeline, with the HTTP API, dashboard and /metrics beside it. Start
// runs in reverse drain order; Shutdown stops ingest, finishes journal
// writes, stops delivery, then closes the stores (STYLE.md, drain order).
package hub
