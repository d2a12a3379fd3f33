// Package sdk is the connector plugin SDK: the Go interfaces a connector
// implements (Destination for the hub's delivery, Source for agent-side
// site plugins), Serve helpers for plugin binaries, and the host side that
// starts a plugin binary and talks to it.
//
// Data path: hub outbox ─▶ delivery engine ─▶ sdk host ─▶ (go-plugin, gRPC,
// AutoMTLS) ─▶ plugin process ─▶ ERP / portal / planning; and at a plant:
// plugin process ─▶ sdk host ─▶ agent buffer, acknowledged after commit.
//
// Plugin authors write a main package:
//
//	func main() { sdk.ServeDestination(myconnector.New(sdk.NewLogger())) }
//
// Hosts open a binary pinned by its SHA-256:
//
//	d, err := sdk.OpenDestination(ctx, sdk.HostConfig{Name: "erp", Path: p, SHA256: sum, Config: cfg, Logger: log})
//	defer d.Close()
//	res, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: k, Action: a, Document: doc})
//
// The host wraps every plugin: the plugin's logs (JSON lines on its stderr)
// and any other stderr output are logged under its name with configured
// secret values scrubbed, calls are counted and timed (Metrics), and a
// crashed plugin process is restarted with backoff and configured again.
// The protocol is proto/plantsync/plugin/v1; the handshake's protocol
// version changes when an older plugin could no longer follow it.
package sdk
