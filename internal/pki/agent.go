package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultAgentValidity is how long an agent certificate is valid when
// AgentRequest.Validity is zero.
const DefaultAgentValidity = 365 * 24 * time.Hour

const (
	maxNameLen     = 64
	agentURNPrefix = "plantsync:agent:"
	plantURNPrefix = "plantsync:plant:"
	minRSABits     = 2048
)

// AgentRequest describes an agent certificate for IssueAgent.
type AgentRequest struct {
	// ID is the agent id, 1-64 characters of A-Z a-z 0-9 . _ -.
	ID string
	// Plant is the plant the agent belongs to, same alphabet as ID.
	Plant string
	// Validity defaults to DefaultAgentValidity; the certificate never
	// outlives the CA.
	Validity time.Duration
	// CSRPEM, if set, is a PEM certificate signing request whose public key
	// is certified; no private key is generated or returned. The request's
	// subject is ignored: the identity is ID and Plant.
	CSRPEM []byte

	// notBefore lets tests issue certificates that are already expired.
	notBefore time.Time
}

// IssueAgent signs an agent client certificate with the CA in dir. The
// identity is encoded as Subject CN = ID and the URI SANs
// urn:plantsync:agent:<ID> and urn:plantsync:plant:<Plant>. With a CSR the
// returned keyPEM is nil; otherwise a new ECDSA P-256 key is generated and
// returned, and the caller must store it with KeyFileMode.
func IssueAgent(dir string, req AgentRequest) (certPEM, keyPEM []byte, err error) {
	if err := errors.Join(ValidateID(req.ID), ValidatePlant(req.Plant)); err != nil {
		return nil, nil, err
	}
	validity := req.Validity
	switch {
	case validity == 0:
		validity = DefaultAgentValidity
	case validity < 0:
		return nil, nil, fmt.Errorf("validity %s is negative; use a positive duration such as 8760h", validity)
	}

	var pub crypto.PublicKey
	if len(req.CSRPEM) > 0 {
		if pub, err = csrPublicKey(req.CSRPEM); err != nil {
			return nil, nil, err
		}
	} else {
		key, err := newKey()
		if err != nil {
			return nil, nil, err
		}
		if keyPEM, err = encodeKey(key); err != nil {
			return nil, nil, err
		}
		pub = key.Public()
	}

	now := time.Now()
	ca, caKey, err := loadCA(PathsIn(dir), now)
	if err != nil {
		return nil, nil, err
	}
	start := now
	if !req.notBefore.IsZero() {
		start = req.notBefore
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.ID},
		NotBefore:    start.Add(-backdate),
		NotAfter:     clampNotAfter(start.Add(validity), ca),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         identityURIs(req.ID, req.Plant),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create agent certificate: %w", err)
	}
	return encodeCert(der), keyPEM, nil
}

func identityURIs(id, plant string) []*url.URL {
	return []*url.URL{
		{Scheme: "urn", Opaque: agentURNPrefix + id},
		{Scheme: "urn", Opaque: plantURNPrefix + plant},
	}
}

// csrPublicKey returns the public key of a PEM CSR after checking that the
// requester holds the matching private key.
func csrPublicKey(csrPEM []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block \"-----BEGIN CERTIFICATE REQUEST-----\" found", ErrBadCSR)
	}
	if block.Type != pemCSR && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block is %q, want %q; create one with `plantsync-agent pki csr`", ErrBadCSR, block.Type, pemCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify (%w); the request was altered or damaged, create a new one with `plantsync-agent pki csr`", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return nil, fmt.Errorf("%w: ECDSA curve %s is not supported; use P-256", ErrBadCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("%w: RSA key has %d bits; use at least %d, or ECDSA P-256", ErrBadCSR, k.N.BitLen(), minRSABits)
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("%w: unsupported public key type %T; use ECDSA P-256", ErrBadCSR, csr.PublicKey)
	}
	return csr.PublicKey, nil
}

// ValidateID checks an agent id: 1-64 characters of A-Z a-z 0-9 . _ -.
func ValidateID(id string) error { return validateName("agent id", id) }

// ValidatePlant checks a plant name: 1-64 characters of A-Z a-z 0-9 . _ -.
func ValidatePlant(plant string) error { return validateName("plant", plant) }

// validateName keeps ids to a set that is safe in URNs, file names, metric
// labels and log lines alike.
func validateName(what, s string) error {
	const want = "use 1-64 characters of A-Z a-z 0-9 . _ -"
	if s == "" {
		return fmt.Errorf("%w: %s is empty; %s", ErrInvalidIdentity, what, want)
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("%w: %s %q is %d bytes long; %s", ErrInvalidIdentity, what, s, len(s), want)
	}
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%w: %s %q contains %q at byte %d; %s", ErrInvalidIdentity, what, s, r, i, want)
		}
	}
	// Ids become file names (`issue-agent -out DIR` writes <id>.crt); "."
	// and ".." would name directories instead.
	if s == "." || s == ".." {
		return fmt.Errorf("%w: %s %q is not allowed; %s, other than . and ..", ErrInvalidIdentity, what, s, want)
	}
	return nil
}

// AgentIdentity reads the agent id and plant from the URI SANs of a
// certificate issued by IssueAgent. It returns ErrNoIdentity if either is
// missing and ErrInvalidIdentity if they are malformed or ambiguous.
func AgentIdentity(cert *x509.Certificate) (id, plant string, err error) {
	if cert == nil {
		return "", "", fmt.Errorf("%w: no certificate", ErrNoIdentity)
	}
	for _, u := range cert.URIs {
		if u.Scheme != "urn" {
			continue
		}
		var (
			dst  *string
			what string
			v    string
		)
		switch {
		case strings.HasPrefix(u.Opaque, agentURNPrefix):
			dst, what, v = &id, "agent id", strings.TrimPrefix(u.Opaque, agentURNPrefix)
		case strings.HasPrefix(u.Opaque, plantURNPrefix):
			dst, what, v = &plant, "plant", strings.TrimPrefix(u.Opaque, plantURNPrefix)
		default:
			continue
		}
		if *dst != "" && *dst != v {
			return "", "", fmt.Errorf("%w: certificate names two %ss, %q and %q", ErrInvalidIdentity, what, *dst, v)
		}
		*dst = v
	}
	switch {
	case id == "" && plant == "":
		return "", "", fmt.Errorf("%w: no urn:plantsync:agent: or urn:plantsync:plant: URI SAN in certificate %q", ErrNoIdentity, cert.Subject.CommonName)
	case id == "":
		return "", "", fmt.Errorf("%w: no urn:plantsync:agent: URI SAN in certificate %q", ErrNoIdentity, cert.Subject.CommonName)
	case plant == "":
		return "", "", fmt.Errorf("%w: no urn:plantsync:plant: URI SAN in certificate %q", ErrNoIdentity, cert.Subject.CommonName)
	}
	if err := errors.Join(ValidateID(id), ValidatePlant(plant)); err != nil {
		return "", "", err
	}
	return id, plant, nil
}

// PeerIdentity returns the agent identity of the verified client
// certificate of a TLS connection, as seen by a server using ServerTLS (for
// gRPC: credentials.TLSInfo.State).
func PeerIdentity(cs tls.ConnectionState) (id, plant string, err error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", "", fmt.Errorf("%w: the peer presented no verified client certificate", ErrNoIdentity)
	}
	return AgentIdentity(cs.VerifiedChains[0][0])
}

// NewCSR returns a PEM certificate signing request with CN=id for the ECDSA
// key at keyPath. If keyPath does not exist, a P-256 key is generated and
// written there with KeyFileMode first (its directory is created 0700), so
// the key never has to leave the plant server.
func NewCSR(keyPath string, id string) (csrPEM []byte, err error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	key, err := loadOrCreateKey(keyPath)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate signing request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), nil
}

func loadOrCreateKey(path string) (*ecdsa.PrivateKey, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		signer, err := readKeyFile(path)
		if err != nil {
			return nil, err
		}
		key, ok := signer.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("key file %s holds a %T, not an ECDSA key; point -key at a new file to generate one", path, signer)
		}
		return key, nil
	case errors.Is(err, fs.ErrNotExist):
		key, err := newKey()
		if err != nil {
			return nil, err
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), DirMode); err != nil {
			return nil, fmt.Errorf("create key directory: %w", err)
		}
		if err := WriteKeyFile(path, keyPEM); err != nil {
			return nil, err
		}
		return key, nil
	default:
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
}
