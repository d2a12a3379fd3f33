// Package mqtt is the agent's MQTT source: it subscribes to MES topics on a
// broker, maps each JSON message to a canonical event whose id derives from
// the message's own id, and acknowledges the message to the broker only
// after the event is committed in the agent's buffer. A crash before the
// commit means the broker redelivers, and the deterministic id lets the hub
// drop the repeat.
//
// This is the walking-skeleton reader (JSON with conventional field names);
// field mapping, Sparkplug B and quarantine build on it.
package mqtt
