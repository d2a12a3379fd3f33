package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type serverResult struct {
	id, plant string
	err       error
	// inHandshake says err came from the handshake itself: a rejected
	// client must never get as far as a connection.
	inHandshake bool
}

// handshake runs one real TLS connection over loopback and reports what the
// server saw and the client's error. The client reads a reply so that, with
// TLS 1.3, a rejection of its certificate (sent after the client considers
// the handshake done) reaches it.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (serverResult, tls.ConnectionState, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	done := make(chan serverResult, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- serverResult{err: err}
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			done <- serverResult{err: err, inHandshake: true}
			return
		}
		id, plant, err := PeerIdentity(tc.ConnectionState())
		if err == nil {
			_, err = tc.Write([]byte("ok"))
		}
		done <- serverResult{id: id, plant: plant, err: err}
	}()

	var state tls.ConnectionState
	conn, clientErr := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), clientCfg)
	if clientErr == nil {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		state = conn.ConnectionState()
		buf := make([]byte, 2)
		if _, clientErr = io.ReadFull(conn, buf); clientErr == nil && string(buf) != "ok" {
			t.Errorf("client read %q, want ok", buf)
		}
		_ = conn.Close()
	}
	select {
	case res := <-done:
		return res, state, clientErr
	case <-time.After(10 * time.Second):
		t.Fatal("server did not finish the handshake")
		return serverResult{}, state, clientErr
	}
}

func TestTLSHandshake(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "main"})
	foreign := newPKI(t, InitOptions{Name: "foreign"})

	goodCert, goodKey := issueAgentFiles(t, p.Dir, AgentRequest{ID: "press-1", Plant: "berlin"})

	csrKey := filepath.Join(t.TempDir(), "plant.key")
	csrPEM, err := NewCSR(csrKey, "line-2")
	if err != nil {
		t.Fatal(err)
	}
	csrCert, _ := issueAgentFiles(t, p.Dir, AgentRequest{ID: "line-2", Plant: "leipzig", CSRPEM: csrPEM})

	foreignCert, foreignKey := issueAgentFiles(t, foreign.Dir, AgentRequest{ID: "press-1", Plant: "berlin"})

	expiredCert, expiredKey := issueAgentFiles(t, p.Dir, AgentRequest{
		ID: "old", Plant: "berlin", Validity: DefaultAgentValidity,
		notBefore: time.Now().AddDate(-2, 0, 0),
	})

	// Signed by the right CA for client auth, but not through IssueAgent.
	ca, caKey := loadTestCA(t, p)
	anonKey := mustKey(t)
	anon := signCert(t, &x509.Certificate{
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey, anonKey.Public())
	anonDir := t.TempDir()
	anonCert, anonKeyPath := filepath.Join(anonDir, "anon.crt"), filepath.Join(anonDir, "anon.key")
	writeTestFile(t, anonCert, encodeCert(anon.Raw), CertFileMode)
	anonKeyPEM, err := encodeKey(anonKey)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, anonKeyPath, anonKeyPEM, KeyFileMode)

	serverCfg, err := ServerTLS(p.HubCert, p.HubKey, p.CACert)
	if err != nil {
		t.Fatalf("ServerTLS: %v", err)
	}

	tests := []struct {
		name       string
		cert, key  string
		caFile     string
		serverName string
		tls12Only  bool
		forceCert  bool // send the certificate even if the server asks for another CA
		wantID     string
		wantPlant  string
		serverErr  string // substring of the server's error; "" means success
		serverIs   error
		clientErr  string // substring of the client's error, if it detects the failure itself
	}{
		{name: "agent with generated key", cert: goodCert, key: goodKey, wantID: "press-1", wantPlant: "berlin"},
		{name: "agent with CSR key", cert: csrCert, key: csrKey, wantID: "line-2", wantPlant: "leipzig"},
		{name: "server name by IP", cert: goodCert, key: goodKey, serverName: "127.0.0.1", wantID: "press-1", wantPlant: "berlin"},
		// crypto/tls clients only offer a certificate from a CA the server
		// names; a hostile client sends it anyway.
		{name: "client cert from a foreign CA", cert: foreignCert, key: foreignKey, serverErr: "didn't provide a certificate"},
		{name: "client cert from a foreign CA, forced", cert: foreignCert, key: foreignKey, forceCert: true, serverErr: "unknown authority"},
		{name: "expired client cert", cert: expiredCert, key: expiredKey, serverErr: "expired"},
		{name: "hub cert used as client cert", cert: p.HubCert, key: p.HubKey, serverErr: "incompatible key usage"},
		{name: "client cert without identity", cert: anonCert, key: anonKeyPath, serverIs: ErrNoIdentity, serverErr: "no plantsync agent identity"},
		{name: "client trusts another CA", cert: goodCert, key: goodKey, caFile: foreign.CACert, clientErr: "unknown authority"},
		{name: "wrong server name", cert: goodCert, key: goodKey, serverName: "hub.invalid", clientErr: "not hub.invalid"},
		{name: "TLS 1.2 client", cert: goodCert, key: goodKey, tls12Only: true, clientErr: "protocol version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caFile := tt.caFile
			if caFile == "" {
				caFile = p.CACert
			}
			serverName := tt.serverName
			if serverName == "" {
				serverName = "localhost"
			}
			clientCfg, err := ClientTLS(tt.cert, tt.key, caFile, serverName)
			if err != nil {
				t.Fatalf("ClientTLS: %v", err)
			}
			if tt.forceCert {
				cert := clientCfg.Certificates[0]
				clientCfg.Certificates = nil
				clientCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
			}
			if tt.tls12Only {
				clientCfg.MinVersion, clientCfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			}

			res, state, clientErr := handshake(t, serverCfg, clientCfg)
			switch {
			case tt.clientErr != "":
				if clientErr == nil || !strings.Contains(clientErr.Error(), tt.clientErr) {
					t.Errorf("client err = %v, want one containing %q", clientErr, tt.clientErr)
				}
				if res.err == nil {
					t.Error("server accepted the connection")
				}
			case tt.serverErr != "":
				if res.err == nil || !strings.Contains(res.err.Error(), tt.serverErr) {
					t.Errorf("server err = %v, want one containing %q", res.err, tt.serverErr)
				}
				if !res.inHandshake {
					t.Errorf("server completed the handshake and failed only afterwards: %v", res.err)
				}
				if tt.serverIs != nil && !errors.Is(res.err, tt.serverIs) {
					t.Errorf("server err = %v, want %v", res.err, tt.serverIs)
				}
				if clientErr == nil {
					t.Error("client did not notice the rejection")
				}
			default:
				if res.err != nil || clientErr != nil {
					t.Fatalf("server err = %v, client err = %v", res.err, clientErr)
				}
				if res.id != tt.wantID || res.plant != tt.wantPlant {
					t.Errorf("server saw %q, %q; want %q, %q", res.id, res.plant, tt.wantID, tt.wantPlant)
				}
				if state.Version != tls.VersionTLS13 {
					t.Errorf("negotiated version %#x, want TLS 1.3", state.Version)
				}
			}
		})
	}
}

func TestTLSConfigs(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "t"})
	srv, err := ServerTLS(p.HubCert, p.HubKey, p.CACert)
	if err != nil {
		t.Fatal(err)
	}
	if srv.MinVersion != tls.VersionTLS13 || srv.ClientAuth != tls.RequireAndVerifyClientCert || srv.ClientCAs == nil || len(srv.Certificates) != 1 {
		t.Errorf("server config: MinVersion %#x, ClientAuth %v, ClientCAs %v, %d certificates",
			srv.MinVersion, srv.ClientAuth, srv.ClientCAs != nil, len(srv.Certificates))
	}
	agentCert, agentKey := issueAgentFiles(t, p.Dir, AgentRequest{ID: "a", Plant: "p"})
	cli, err := ClientTLS(agentCert, agentKey, p.CACert, "hub.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if cli.MinVersion != tls.VersionTLS13 || cli.RootCAs == nil || cli.ServerName != "hub.example.com" || len(cli.Certificates) != 1 {
		t.Errorf("client config: MinVersion %#x, RootCAs %v, ServerName %q, %d certificates",
			cli.MinVersion, cli.RootCAs != nil, cli.ServerName, len(cli.Certificates))
	}
}

func TestTLSConfigErrors(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "t"})
	missing := filepath.Join(t.TempDir(), "missing.crt")
	tests := []struct {
		name          string
		cert, key, ca string
		wantErr       error
		want          string
	}{
		{"missing certificate", missing, p.HubKey, p.CACert, fs.ErrNotExist, missing},
		{"missing CA", p.HubCert, p.HubKey, missing, fs.ErrNotExist, missing},
		{"key of another certificate", p.HubCert, p.CAKey, p.CACert, ErrKeyMismatch, p.CAKey},
		{"leaf as CA file", p.HubCert, p.HubKey, p.HubCert, ErrNotCA, "use ca.crt"},
		{"certificate as key", p.HubCert, p.HubCert, p.CACert, ErrBadPEM, p.HubCert},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for side, fn := range map[string]func() (*tls.Config, error){
				"server": func() (*tls.Config, error) { return ServerTLS(tt.cert, tt.key, tt.ca) },
				"client": func() (*tls.Config, error) { return ClientTLS(tt.cert, tt.key, tt.ca, "localhost") },
			} {
				_, err := fn()
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("%s: err = %v, want %v", side, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s: error %q does not contain %q", side, err, tt.want)
				}
			}
		})
	}
}

func TestPeerIdentityWithoutCertificate(t *testing.T) {
	if _, _, err := PeerIdentity(tls.ConnectionState{}); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("err = %v, want ErrNoIdentity", err)
	}
}
