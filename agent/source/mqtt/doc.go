// Package mqtt is the agent's MQTT source: it subscribes to a broker (with
// failover, TLS and credentials from files or the environment), maps each
// message to canonical events — JSON with field mapping and CEL, plain text
// or numbers, Sparkplug B births, data and deaths — and hands them to the
// buffer. A QoS 1/2 message is acknowledged to the broker only after its
// events are committed; a crash before that means a redelivery, and the
// event id derived from the message (its own id, its Sparkplug sequence and
// timestamp, or a content hash kept in a window committed with the buffer)
// lets the hub drop the repeat.
//
// What cannot be decoded or mapped is kept in a quarantine (bbolt, in the
// source's state folder), reported to the hub as a source.error event and
// acknowledged, so it never blocks the subscription; the admin API and
// `plantsync-agent mqtt quarantine list|replay` show and replay it.
//
// Data path: broker ─▶ mqtt source (mapping) ─▶ buffer ─▶ ack to broker.
package mqtt
