// Package buffer is the agent's store-and-forward buffer: the point where an
// event becomes durable on the plant server. Sources hand events to Append;
// once Append reports success the event is fsync'd in a bbolt file and the
// source may acknowledge its own peer (MQTT broker, plugin). The uplink reads
// events in sequence order and the buffer deletes them only after the hub has
// acknowledged them.
//
// Data path: source ─▶ mapping ─▶ buffer ─▶ uplink.
//
// Commits are grouped: one committer goroutine gathers every pending append
// and acknowledgement into one bbolt transaction, so one fsync covers many
// events. The buffer is bounded by Config.MaxBytes with an overflow policy:
// "block" holds appends (and so the sources' acknowledgements) until the hub
// drains space; "drop_oldest" deletes the oldest events not yet sent and
// records the dropped sequence ranges durably, reporting them to the hub as a
// buffer.overflow event, so loss is never silent.
package buffer
