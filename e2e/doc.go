// Package e2e holds end-to-end tests: real hub and agent (in-process or as
// separate processes built from this tree), a real MQTT broker, and the
// project's fault proxy between them. The tests count what arrived.
package e2e
