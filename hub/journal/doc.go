// Package journal is the hub's durable event log: every event accepted from
// an agent, a partner or ERP change capture is committed here, with one
// hub-wide position, before its producer is acknowledged. The pipeline reads
// the journal in position order.
//
// Data path: ingest ─▶ journal ─▶ pipeline.
//
// The journal drops duplicates twice over: by (producer, epoch, sequence)
// watermark for a resent batch, and by event id through a retained index for
// the same event arriving under a new sequence (e.g. an MQTT message the
// broker redelivered after an agent crash). Events the hub refuses are kept
// in a separate rejected store with the reason.
//
// Journal is a narrow interface so that the embedded bbolt store can be
// swapped for a distributed engine (NATS JetStream is the intended one) when
// a region outgrows one machine.
package journal
