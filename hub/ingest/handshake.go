package ingest

import (
	"log/slog"
	"net"

	"google.golang.org/grpc/credentials"
)

// loggedCreds makes refused TLS handshakes visible: grpc-go reports them
// only through its own logger, so an agent with a foreign or expired
// certificate would otherwise fail without a trace at the hub.
type loggedCreds struct {
	credentials.TransportCredentials
	log     *slog.Logger
	refused func()
}

func (c loggedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.refused()
		c.log.Warn("agent connection refused during the TLS handshake", "remote", conn.RemoteAddr().String(), "error", err)
	}
	return out, info, err
}

func (c loggedCreds) Clone() credentials.TransportCredentials {
	return loggedCreds{TransportCredentials: c.TransportCredentials.Clone(), log: c.log, refused: c.refused}
}
