package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// ServerTLS returns the hub's TLS configuration for agent ingest: TLS 1.3
// only, and every client must present a certificate that chains to the CA in
// clientCAFile and carries an agent identity (see AgentIdentity), so a
// handler can rely on PeerIdentity. The files are read once; restart to pick
// up a renewed certificate.
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool, err := loadPool(clientCAFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		// Reject certificates from the same CA that are not agent
		// certificates during the handshake, rather than in every handler.
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, _, err := PeerIdentity(cs)
			return err
		},
	}, nil
}

// ClientTLS returns an agent's TLS configuration for connecting to the hub:
// TLS 1.3 only, presenting the certificate in certFile and trusting only the
// CA in caFile. serverName is the name checked against the hub certificate;
// if empty, crypto/tls (or gRPC) derives it from the dialled address.
func ClientTLS(certFile, keyFile, caFile, serverName string) (*tls.Config, error) {
	cert, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
	}, nil
}

// loadKeyPair is tls.LoadX509KeyPair with errors that name the files.
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certs, err := readCertFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := readKeyFile(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !publicKeyEqual(certs[0].PublicKey, key) {
		return tls.Certificate{}, fmt.Errorf("key file %s does not match certificate %s: %w; use the key the certificate was issued for",
			keyFile, certFile, ErrKeyMismatch)
	}
	chain := make([][]byte, len(certs))
	for i, c := range certs {
		chain[i] = c.Raw
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: certs[0]}, nil
}

func loadPool(caFile string) (*x509.CertPool, error) {
	certs, err := readCertFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for _, c := range certs {
		if c.IsCA {
			pool.AddCert(c)
			n++
		}
	}
	// A leaf here (hub.crt instead of ca.crt, say) would otherwise surface
	// only as an opaque "unknown authority" during every handshake.
	if n == 0 {
		return nil, fmt.Errorf("CA file %s: %w; use ca.crt from the hub's PKI directory", caFile, ErrNotCA)
	}
	return pool, nil
}
