// Package agent assembles plantsync-agent: sources ─▶ buffer ─▶ uplink,
// plus the loopback admin listener (/metrics, /healthz, /api/v1/status).
// Start runs in reverse drain order (buffer, uplink, sources); Shutdown
// stops sources, flushes the buffer's commits, closes the uplink, then
// closes the buffer file (STYLE.md, drain order).
package agent
