// Package faultproxy is the loopback TCP proxy that every network-fault test
// in plantsync goes through: agent↔hub gRPC, agent↔OPC UA server and
// agent↔MQTT broker.
//
// A test starts the real peer on 127.0.0.1:0, puts a Proxy in front of it and
// points the component under test at Proxy.Addr. It can then cut the link
// (Cut/Restore), freeze it without closing (Stall/Unstall), add latency
// (SetDelay), abort connections with a TCP reset (ResetAll) or move later
// connections to another peer (SetTarget), and afterwards count what went
// through (Stats).
//
// The proxy only binds loopback addresses: it exists for tests and must never
// expose a peer beyond the machine it runs on.
package faultproxy
