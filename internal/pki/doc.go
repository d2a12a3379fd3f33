// Package pki is the small public-key infrastructure shared by plantsync's
// agent and hub.
//
// The hub runs its own certificate authority (Init writes ca.crt/ca.key and
// the hub's server certificate hub.crt/hub.key into one directory). Agents on
// plant servers authenticate to the hub's gRPC ingest with client
// certificates over TLS 1.3 (ServerTLS, ClientTLS). An agent's identity, its
// id and the plant it belongs to, is carried in its certificate as the URI
// SANs urn:plantsync:agent:<id> and urn:plantsync:plant:<plant>
// (IssueAgent, AgentIdentity, PeerIdentity), so the hub never trusts an id
// an agent merely claims in a message.
//
// An agent's private key can stay on its plant server: NewCSR creates (or
// reuses) the key there and produces a certificate signing request, and
// IssueAgent signs the request's public key with the identity the operator
// chose, ignoring whatever the request's subject says.
//
// CheckCertFile, CheckKeyFile and CheckPair back the `validate`
// subcommands: every error names the file and says how to fix it.
package pki
