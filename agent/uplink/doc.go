// Package uplink streams the agent's buffered events to its regional hub over
// one gRPC bidirectional stream with mutual TLS. It resumes from the hub's
// resume point after every reconnect, keeps several batches in flight, and
// tells the buffer to delete only what the hub acknowledged.
//
// Data path: buffer ─▶ uplink ─▶ hub ingest.
package uplink
