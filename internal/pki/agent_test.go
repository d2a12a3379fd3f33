package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIssueAgent(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "t"})
	ca, _ := loadTestCA(t, p)
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	csrKeyPath := filepath.Join(t.TempDir(), "agent.key")
	csrPEM, err := NewCSR(csrKeyPath, "whatever-the-agent-says")
	if err != nil {
		t.Fatal(err)
	}
	csrKey, err := readKeyFile(csrKeyPath)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name         string
		req          AgentRequest
		wantKey      bool
		wantValidity time.Duration
	}{
		{"generated key, default validity", AgentRequest{ID: "press-1", Plant: "berlin"}, true, DefaultAgentValidity},
		{"generated key, 48h", AgentRequest{ID: "press_2.a", Plant: "B-2", Validity: 48 * time.Hour}, true, 48 * time.Hour},
		{"from CSR", AgentRequest{ID: "line-7", Plant: "leipzig", CSRPEM: csrPEM}, false, DefaultAgentValidity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, err := IssueAgent(p.Dir, tt.req)
			if err != nil {
				t.Fatalf("IssueAgent: %v", err)
			}
			cert := parseOneCert(t, certPEM)
			if cert.Subject.CommonName != tt.req.ID {
				t.Errorf("CN = %q, want %q", cert.Subject.CommonName, tt.req.ID)
			}
			wantURIs := []string{"urn:plantsync:agent:" + tt.req.ID, "urn:plantsync:plant:" + tt.req.Plant}
			var uris []string
			for _, u := range cert.URIs {
				uris = append(uris, u.String())
			}
			if !slices.Equal(uris, wantURIs) {
				t.Errorf("URI SANs = %v, want %v", uris, wantURIs)
			}
			if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ExtKeyUsage = %v, want client auth only", cert.ExtKeyUsage)
			}
			if cert.IsCA {
				t.Error("agent certificate is a CA")
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("does not verify against the CA: %v", err)
			}
			if got := cert.NotAfter.Sub(time.Now()); got < tt.wantValidity-time.Minute || got > tt.wantValidity {
				t.Errorf("valid for another %v, want %v", got, tt.wantValidity)
			}
			if time.Until(cert.NotBefore) > -backdate+time.Minute {
				t.Errorf("NotBefore %v is not backdated for clock skew", cert.NotBefore)
			}

			if !tt.wantKey {
				if keyPEM != nil {
					t.Fatal("a key was returned for a CSR; the agent's key must stay on the plant server")
				}
				if !publicKeyEqual(cert.PublicKey, csrKey) {
					t.Error("certificate is not for the CSR's key")
				}
				return
			}
			key, err := parseKey(keyPEM)
			if err != nil {
				t.Fatalf("parse returned key: %v", err)
			}
			if !publicKeyEqual(cert.PublicKey, key) {
				t.Error("returned key does not match the certificate")
			}
			if k, ok := key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
				t.Errorf("generated key is %T, want ECDSA P-256", key)
			}
		})
	}
}

func TestIssueAgentIgnoresCSRSubject(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "t"})
	key := mustKey(t)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "evil", Organization: []string{"attacker"}},
		DNSNames: []string{"hub.example.com"},
		URIs: []*url.URL{
			{Scheme: "urn", Opaque: "plantsync:agent:evil"},
			{Scheme: "urn", Opaque: "plantsync:plant:elsewhere"},
		},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := IssueAgent(p.Dir, AgentRequest{ID: "press-1", Plant: "berlin", CSRPEM: pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der})})
	if err != nil {
		t.Fatal(err)
	}
	cert := parseOneCert(t, certPEM)
	id, plant, err := AgentIdentity(cert)
	if err != nil || id != "press-1" || plant != "berlin" {
		t.Fatalf("identity = %q, %q, %v; want the operator's press-1, berlin", id, plant, err)
	}
	if cert.Subject.CommonName != "press-1" || len(cert.Subject.Organization) != 0 || len(cert.DNSNames) != 0 || len(cert.URIs) != 2 {
		t.Errorf("CSR content leaked into the certificate: subject %v, DNS %v, URIs %v", cert.Subject, cert.DNSNames, cert.URIs)
	}
}

func TestIssueAgentValidityClampedToCA(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "t"})
	ca, _ := loadTestCA(t, p)
	certPEM, _, err := IssueAgent(p.Dir, AgentRequest{ID: "a", Plant: "p", Validity: 20 * DefaultAgentValidity})
	if err != nil {
		t.Fatal(err)
	}
	if got := parseOneCert(t, certPEM).NotAfter; !got.Equal(ca.NotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", got, ca.NotAfter)
	}
}

func TestIssueAgentRejectsBadRequests(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "t"})

	goodCSR, err := NewCSR(filepath.Join(t.TempDir(), "k"), "a")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(goodCSR)
	tampered := slices.Clone(block.Bytes)
	// The signature is the last field of the DER; changing its final byte
	// keeps the request parsable but breaks the proof of possession.
	tampered[len(tampered)-1] ^= 0x01
	tamperedCSR := pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: tampered})

	csrFor := func(key any) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a"}}, key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der})
	}
	rsaSmall, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	hubPEM, err := os.ReadFile(p.HubCert)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		req     AgentRequest
		wantErr error
		want    []string
	}{
		{"tampered CSR", AgentRequest{ID: "a", Plant: "p", CSRPEM: tamperedCSR}, ErrBadCSR, []string{"signature does not verify", "plantsync-agent pki csr"}},
		{"not PEM", AgentRequest{ID: "a", Plant: "p", CSRPEM: []byte("hello")}, ErrBadCSR, []string{"BEGIN CERTIFICATE REQUEST"}},
		{"certificate instead of CSR", AgentRequest{ID: "a", Plant: "p", CSRPEM: hubPEM}, ErrBadCSR, []string{`PEM block is "CERTIFICATE"`}},
		{"garbage DER", AgentRequest{ID: "a", Plant: "p", CSRPEM: pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: []byte{1, 2, 3}})}, ErrBadCSR, nil},
		{"RSA 1024", AgentRequest{ID: "a", Plant: "p", CSRPEM: csrFor(rsaSmall)}, ErrBadCSR, []string{"1024 bits"}},
		{"negative validity", AgentRequest{ID: "a", Plant: "p", Validity: -time.Hour}, nil, []string{"validity -1h0m0s is negative"}},
		{"bad id and plant both reported", AgentRequest{ID: "a b", Plant: ""}, ErrInvalidIdentity, []string{`agent id "a b"`, "plant is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, err := IssueAgent(p.Dir, tt.req)
			if err == nil {
				t.Fatal("IssueAgent succeeded")
			}
			if certPEM != nil || keyPEM != nil {
				t.Error("output returned along with an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}

	// The untampered CSR goes through, so the failures above are the
	// tampering's doing.
	if _, _, err := IssueAgent(p.Dir, AgentRequest{ID: "a", Plant: "p", CSRPEM: goodCSR}); err != nil {
		t.Fatalf("good CSR: %v", err)
	}
}

func TestValidateNames(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means valid
	}{
		{"press-1", ""},
		{"a", ""},
		{"A.b_c-9", ""},
		{"...", ""},
		{strings.Repeat("x", 64), ""},
		{"", "is empty"},
		{strings.Repeat("x", 65), "is 65 bytes long"},
		{"a b", `contains ' ' at byte 1`},
		{"a/b", `contains '/' at byte 1`},
		{"a:b", `contains ':' at byte 1`},
		{"präs", `contains 'ä' at byte 2`},
		{".", "not allowed"},
		{"..", "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			for what, fn := range map[string]func(string) error{"agent id": ValidateID, "plant": ValidatePlant} {
				err := fn(tt.in)
				if tt.want == "" {
					if err != nil {
						t.Errorf("%s: unexpected error %v", what, err)
					}
					continue
				}
				if !errors.Is(err, ErrInvalidIdentity) {
					t.Fatalf("%s: err = %v, want ErrInvalidIdentity", what, err)
				}
				for _, w := range []string{what, tt.want, "A-Z a-z 0-9 . _ -"} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q does not contain %q", what, err, w)
					}
				}
			}
		})
	}
}

func TestAgentIdentity(t *testing.T) {
	key := mustKey(t)
	urn := func(s string) *url.URL { return &url.URL{Scheme: "urn", Opaque: s} }
	tests := []struct {
		name      string
		uris      []*url.URL
		wantID    string
		wantPlant string
		wantErr   error
	}{
		{"roundtrip", identityURIs("press-1", "berlin"), "press-1", "berlin", nil},
		{"order does not matter", []*url.URL{urn("plantsync:plant:p"), {Scheme: "https", Host: "x"}, urn("plantsync:agent:a")}, "a", "p", nil},
		{"repeated but equal", []*url.URL{urn("plantsync:agent:a"), urn("plantsync:agent:a"), urn("plantsync:plant:p")}, "a", "p", nil},
		{"no URIs", nil, "", "", ErrNoIdentity},
		{"agent only", []*url.URL{urn("plantsync:agent:a")}, "", "", ErrNoIdentity},
		{"plant only", []*url.URL{urn("plantsync:plant:p")}, "", "", ErrNoIdentity},
		{"foreign URNs", []*url.URL{urn("other:agent:a"), urn("uuid:1234")}, "", "", ErrNoIdentity},
		{"two agents", []*url.URL{urn("plantsync:agent:a"), urn("plantsync:agent:b"), urn("plantsync:plant:p")}, "", "", ErrInvalidIdentity},
		{"empty agent id", []*url.URL{urn("plantsync:agent:"), urn("plantsync:plant:p")}, "", "", ErrNoIdentity},
		{"bad characters", []*url.URL{urn("plantsync:agent:a:b"), urn("plantsync:plant:p")}, "", "", ErrInvalidIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := signCert(t, &x509.Certificate{URIs: tt.uris}, nil, key, key.Public())
			id, plant, err := AgentIdentity(cert)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if id != tt.wantID || plant != tt.wantPlant {
				t.Errorf("got %q, %q; want %q, %q", id, plant, tt.wantID, tt.wantPlant)
			}
		})
	}
	if _, _, err := AgentIdentity(nil); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("nil certificate: err = %v, want ErrNoIdentity", err)
	}
}

func TestNewCSR(t *testing.T) {
	keyPath := filepath.Join(t.TempDir(), "nested", "dir", "agent.key")

	csr1 := mustParseCSR(t, mustNewCSR(t, keyPath, "press-1"))
	fi, err := os.Stat(keyPath)
	if err != nil {
		t.Fatalf("key not written: %v", err)
	}
	if fi.Mode().Perm() != KeyFileMode {
		t.Errorf("key mode %04o, want %04o", fi.Mode().Perm(), KeyFileMode)
	}
	if csr1.Subject.CommonName != "press-1" {
		t.Errorf("CN = %q", csr1.Subject.CommonName)
	}
	key, err := CheckKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if !publicKeyEqual(csr1.PublicKey, key) {
		t.Error("CSR is not for the written key")
	}

	// A second call reuses the key: renewing a certificate must not
	// invalidate the one in use.
	csr2 := mustParseCSR(t, mustNewCSR(t, keyPath, "press-1"))
	if !publicKeyEqual(csr2.PublicKey, key) {
		t.Error("second NewCSR generated a new key")
	}
}

func TestNewCSRErrors(t *testing.T) {
	dir := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM, err := encodeKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, "rsa.key"), rsaPEM, KeyFileMode)
	writeTestFile(t, filepath.Join(dir, "junk.key"), []byte("not a key"), KeyFileMode)

	tests := []struct {
		name    string
		key     string
		id      string
		wantErr error
		want    string
	}{
		{"bad id", filepath.Join(dir, "new.key"), "a/b", ErrInvalidIdentity, "agent id"},
		{"RSA key", filepath.Join(dir, "rsa.key"), "a", nil, "not an ECDSA key"},
		{"junk key", filepath.Join(dir, "junk.key"), "a", ErrBadPEM, "junk.key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCSR(tt.key, tt.id)
			if err == nil {
				t.Fatal("NewCSR succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "new.key")); err == nil {
		t.Error("a key was written although the id was rejected")
	}
}

func mustNewCSR(t *testing.T, keyPath, id string) []byte {
	t.Helper()
	csrPEM, err := NewCSR(keyPath, id)
	if err != nil {
		t.Fatalf("NewCSR: %v", err)
	}
	return csrPEM
}

func mustParseCSR(t *testing.T, csrPEM []byte) *x509.CertificateRequest {
	t.Helper()
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != pemCSR {
		t.Fatalf("not a PEM CSR: %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	return csr
}
