// Package opcua is the agent's OPC UA source (`type: opcua`): how the agent
// hears machines. It keeps one secure session per configured endpoint,
// subscribes to explicitly listed nodes, to nodes found by browse rules
// (re-expanded on a schedule so a new machine appears without a restart)
// and to event notifiers (alarms and conditions), maps every value to a
// canonical event (observation, machine.state, machine.alarm or any other
// configured type) and hands it to the agent's buffer.
//
// Data path: OPC UA server ─▶ session/subscriptions ─▶ processor (deadband,
// mapping, deterministic ids) ─▶ pump (conflation under the block policy)
// ─▶ buffer.
//
// OPC UA cannot be told to hold back, so the source never blocks its
// server: while the buffer holds appends (block policy) it keeps only the
// latest value per node and counts the superseded ones. Lost sessions are
// rebuilt with jittered, rate-bounded retries, every monitored item is
// restored, unknown nodes are marked bad and retried alone, and values
// missed while disconnected are read back with HistoryRead where the server
// historizes the node. Event ids derive from plant, endpoint, node,
// timestamp and value, so any overlap between live and back-filled values
// is dropped at the hub (DESIGN.md rule 2).
//
// The `plantsync-agent opcua trust|browse` commands are in cli.go.
package opcua
