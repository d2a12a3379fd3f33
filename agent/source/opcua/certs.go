package opcua

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/internal/pki"
)

// ErrUntrustedServer is wrapped by the error for a server certificate that
// is neither pinned nor in the trust folder.
var ErrUntrustedServer = errors.New("server certificate is not trusted")

// ErrCertificate is wrapped by failures to load or create the client's own
// certificate.
var ErrCertificate = errors.New("opc ua client certificate")

// UntrustedError tells which certificate was refused and how to trust it.
type UntrustedError struct {
	Endpoint    string
	Fingerprint string // SHA-256, hex
	Subject     string
	NotAfter    time.Time
	// StateDir is the source's state folder, for the trust command.
	StateDir string
}

func (e *UntrustedError) Error() string {
	cmd := "plantsync-agent opcua trust -endpoint " + e.Endpoint
	if e.StateDir != "" {
		cmd += " -state-dir " + e.StateDir
	}
	return fmt.Sprintf("%v: %s presented %q (SHA-256 fingerprint %s, valid until %s); "+
		"if that is your server, run `%s` or add to this source's config: trust: {fingerprints: [\"%s\"]}",
		ErrUntrustedServer, e.Endpoint, e.Subject, e.Fingerprint, e.NotAfter.UTC().Format(time.DateOnly), cmd, e.Fingerprint)
}

func (e *UntrustedError) Unwrap() error { return ErrUntrustedServer }

// Fingerprint is the SHA-256 fingerprint of a DER certificate as 64 hex
// digits, the form trust.fingerprints takes. Of a chain (some servers send
// theirs with the issuers) it is the server's own, the first.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(leaf(der))
	return hex.EncodeToString(sum[:])
}

// leaf returns the first certificate of a DER chain.
func leaf(der []byte) []byte {
	if certs, err := x509.ParseCertificates(der); err == nil && len(certs) > 1 {
		return certs[0].Raw
	}
	return der
}

// trustStore decides whether a server certificate is trusted.
type trustStore struct {
	dir    string
	pinned map[[32]byte]bool
}

func newTrustStore(cfg TrustConfig, stateDir string) trustStore {
	ts := trustStore{dir: cfg.Dir, pinned: map[[32]byte]bool{}}
	if ts.dir == "" && stateDir != "" {
		ts.dir = filepath.Join(stateDir, "pki", "trusted")
	}
	for _, f := range cfg.Fingerprints {
		if fp, err := parseFingerprint(f); err == nil {
			ts.pinned[fp] = true
		}
	}
	return ts
}

// trusted reads the trust folder on every call, so a certificate added by
// `plantsync-agent opcua trust` while the agent runs counts at the next
// connect attempt.
func (t trustStore) trusted(der []byte) bool {
	sum := sha256.Sum256(leaf(der))
	if t.pinned[sum] {
		return true
	}
	if t.dir == "" {
		return false
	}
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(t.dir, e.Name()))
		if err != nil {
			continue
		}
		if c, err := decodeCertificate(b); err == nil && sha256.Sum256(c) == sum {
			return true
		}
	}
	return false
}

// writeTrusted stores a server certificate in dir as <fingerprint>.der.
func writeTrusted(dir string, der []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("trust folder: %w", err)
	}
	p := filepath.Join(dir, Fingerprint(der)[:16]+".der")
	if err := pki.WriteFileAtomic(p, leaf(der), 0o644); err != nil {
		return "", fmt.Errorf("store certificate: %w", err)
	}
	return p, nil
}

// identity is the client's application instance certificate and key.
type identity struct {
	cert   []byte // DER
	key    *rsa.PrivateKey
	appURI string
}

// ownPaths are where a generated certificate is kept.
func ownPaths(stateDir string) (cert, key string) {
	return filepath.Join(stateDir, "pki", "own", "cert.der"), filepath.Join(stateDir, "pki", "own", "private", "key.pem")
}

// loadIdentity loads the configured certificate, or the one generated
// earlier into stateDir, or generates and keeps a new one. created tells
// whether it was generated now.
func loadIdentity(cfg CertificateConfig, stateDir, appURI string) (id identity, created bool, err error) {
	certPath, keyPath := cfg.CertFile, cfg.KeyFile
	generated := certPath == ""
	if generated {
		if stateDir == "" {
			return identity{}, false, fmt.Errorf("%w: no state folder to keep a generated certificate in; set certificate.cert_file and key_file", ErrCertificate)
		}
		certPath, keyPath = ownPaths(stateDir)
		if _, err := os.Stat(certPath); errors.Is(err, os.ErrNotExist) {
			if err := generateIdentity(certPath, keyPath, appURI); err != nil {
				return identity{}, false, err
			}
			created = true
		}
	}
	certRaw, err := os.ReadFile(certPath)
	if err != nil {
		return identity{}, false, fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	der, err := decodeCertificate(certRaw)
	if err != nil {
		return identity{}, false, fmt.Errorf("%w: %s: %w", ErrCertificate, certPath, err)
	}
	keyRaw, err := os.ReadFile(keyPath)
	if err != nil {
		return identity{}, false, fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	key, err := decodeRSAKey(keyRaw)
	if err != nil {
		return identity{}, false, fmt.Errorf("%w: %s: %w", ErrCertificate, keyPath, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return identity{}, false, fmt.Errorf("%w: %s: %w", ErrCertificate, certPath, err)
	}
	pub, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return identity{}, false, fmt.Errorf("%w: %s does not belong to %s (OPC UA needs an RSA key pair)", ErrCertificate, keyPath, certPath)
	}
	id = identity{cert: der, key: key}
	if len(c.URIs) > 0 {
		id.appURI = c.URIs[0].String()
	}
	return id, created, nil
}

// generateIdentity writes a self-signed application instance certificate
// as OPC UA Part 6 wants it: the application URI in the subject
// alternative name, the host names, and key usages for signing and
// encryption.
func generateIdentity(certPath, keyPath, appURI string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("%w: generate key: %w", ErrCertificate, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("%w: serial: %w", ErrCertificate, err)
	}
	uri, err := url.Parse(appURI)
	if err != nil {
		return fmt.Errorf("%w: application uri %q: %w", ErrCertificate, appURI, err)
	}
	host, _ := os.Hostname()
	dns := []string{"localhost"}
	if host != "" && host != "localhost" {
		dns = append(dns, host)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "plantsync-agent", Organization: []string{"plantsync"}},
		// Tolerate a PLC whose clock is behind.
		NotBefore: now.Add(-24 * time.Hour),
		NotAfter:  now.AddDate(5, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
		DNSNames:              dns,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("%w: create: %w", ErrCertificate, err)
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	// The key first: a certificate without its key would be unusable.
	if err := pki.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	if err := pki.WriteFileAtomic(certPath, der, 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrCertificate, err)
	}
	return nil
}

func decodeCertificate(b []byte) ([]byte, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q is not a CERTIFICATE", blk.Type)
		}
		b = blk.Bytes
	}
	if _, err := x509.ParseCertificate(b); err != nil {
		return nil, err
	}
	return b, nil
}

func decodeRSAKey(b []byte) (*rsa.PrivateKey, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	if k, err := x509.ParsePKCS1PrivateKey(b); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("not an RSA private key (PKCS#1 or PKCS#8, PEM or DER)")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key is %T; OPC UA needs RSA", k)
	}
	return rk, nil
}

func certSubject(der []byte) (string, time.Time) {
	c, err := x509.ParseCertificate(leaf(der))
	if err != nil {
		return "unparsable certificate", time.Time{}
	}
	s := c.Subject.String()
	if len(c.URIs) > 0 {
		s += ", " + c.URIs[0].String()
	}
	return s, c.NotAfter
}

func readSecret(file, env string) (string, error) {
	if file != "" {
		return config.Secret("auth.password_file", "file:"+file)
	}
	return config.Secret("auth.password_env", "env:"+env)
}
