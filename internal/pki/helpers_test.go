package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newPKI runs Init in a fresh directory that does not exist yet.
func newPKI(t *testing.T, opts InitOptions) *Paths {
	t.Helper()
	p, err := Init(filepath.Join(t.TempDir(), "pki"), opts)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return p
}

// issueAgentFiles issues an agent certificate and writes it (and its key,
// when one was generated) into a temporary directory.
func issueAgentFiles(t *testing.T, dir string, req AgentRequest) (certPath, keyPath string) {
	t.Helper()
	certPEM, keyPEM, err := IssueAgent(dir, req)
	if err != nil {
		t.Fatalf("IssueAgent: %v", err)
	}
	out := t.TempDir()
	certPath = filepath.Join(out, req.ID+".crt")
	keyPath = filepath.Join(out, req.ID+".key")
	if err := WriteCertFile(certPath, certPEM); err != nil {
		t.Fatal(err)
	}
	if keyPEM != nil {
		if err := WriteKeyFile(keyPath, keyPEM); err != nil {
			t.Fatal(err)
		}
	}
	return certPath, keyPath
}

func parseOneCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	certs, err := parseCerts(certPEM)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	if len(certs) != 1 {
		t.Fatalf("got %d certificates, want 1", len(certs))
	}
	return certs[0]
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseOneCert(t, data)
}

func loadTestCA(t *testing.T, p *Paths) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	ca, key, err := loadCA(p, time.Now())
	if err != nil {
		t.Fatalf("loadCA: %v", err)
	}
	return ca, key
}

// signCert signs tmpl with parent/parentKey (self-signed when parent is
// nil) for pub, filling in the fields every certificate needs.
func signCert(t *testing.T, tmpl, parent *x509.Certificate, parentKey crypto.Signer, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	if tmpl.Subject.CommonName == "" {
		tmpl.Subject = pkix.Name{CommonName: "test"}
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatalf("create certificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeTestFile(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := WriteFileAtomic(path, data, perm); err != nil {
		t.Fatal(err)
	}
}

func mustKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
