package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"
)

// File names inside a PKI directory.
const (
	CACertFile  = "ca.crt"
	CAKeyFile   = "ca.key"
	HubCertFile = "hub.crt"
	HubKeyFile  = "hub.key"
)

const (
	caYears  = 10
	hubYears = 2

	// backdate absorbs clock skew between the hub and plant servers, so a
	// certificate issued a moment ago is not rejected as not yet valid.
	backdate = 5 * time.Minute

	// maxCANameLen keeps "plantsync CA <name>" within the 64-character
	// common name limit of RFC 5280.
	maxCANameLen = 64 - len("plantsync CA ")
)

// Paths names the files of a PKI directory.
type Paths struct {
	Dir     string
	CACert  string
	CAKey   string
	HubCert string
	HubKey  string
}

// PathsIn returns the file names Init uses in dir, without touching disk.
func PathsIn(dir string) *Paths {
	return &Paths{
		Dir:     dir,
		CACert:  filepath.Join(dir, CACertFile),
		CAKey:   filepath.Join(dir, CAKeyFile),
		HubCert: filepath.Join(dir, HubCertFile),
		HubKey:  filepath.Join(dir, HubKeyFile),
	}
}

// InitOptions configures Init.
type InitOptions struct {
	// Name goes into the CA's common name, "plantsync CA <Name>", so
	// operators can tell the CAs of several hubs apart. Defaults to the
	// first label of the host name.
	Name string
	// Hosts are extra DNS names or IP addresses the hub is reached at by
	// agents; localhost, 127.0.0.1 and ::1 are always included.
	Hosts []string
	// Force replaces an existing CA. Every agent certificate issued by the
	// old CA stops working.
	Force bool
}

// Init creates a CA and a hub server certificate in dir (created 0700 if
// missing): ca.crt and ca.key (ECDSA P-256, valid 10 years) and hub.crt and
// hub.key (valid 2 years). It refuses to replace an existing CA unless
// opts.Force is set.
func Init(dir string, opts InitOptions) (*Paths, error) {
	p := PathsIn(dir)
	name, err := caName(opts.Name)
	if err != nil {
		return nil, err
	}
	dnsNames, ips, err := hubSANs(opts.Hosts)
	if err != nil {
		return nil, err
	}
	if !opts.Force {
		for _, f := range []string{p.CACert, p.CAKey} {
			_, err := os.Lstat(f)
			if err == nil {
				return nil, fmt.Errorf("refusing to overwrite %s: %w; use another -dir or remove it "+
					"(a new CA means every agent needs a new certificate)", f, ErrCAExists)
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("check %s: %w", f, err)
			}
		}
	}
	if err := os.MkdirAll(dir, DirMode); err != nil {
		return nil, fmt.Errorf("create PKI directory: %w", err)
	}

	now := time.Now()
	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "plantsync CA " + name, Organization: []string{"plantsync"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(caYears, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// The CA signs leaf certificates only; an intermediate would let a
		// stolen leaf key mint identities.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	caKeyPEM, err := encodeKey(caKey)
	if err != nil {
		return nil, err
	}
	hubCertPEM, hubKeyPEM, err := issueHub(ca, caKey, dnsNames, ips, now)
	if err != nil {
		return nil, err
	}
	// Keys before certificates: a crash in between leaves ca.key behind,
	// which makes the next Init refuse rather than silently start over.
	for _, w := range []struct {
		path string
		data []byte
		perm fs.FileMode
	}{
		{p.CAKey, caKeyPEM, KeyFileMode},
		{p.CACert, encodeCert(der), CertFileMode},
		{p.HubKey, hubKeyPEM, KeyFileMode},
		{p.HubCert, hubCertPEM, CertFileMode},
	} {
		if err := WriteFileAtomic(w.path, w.data, w.perm); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// RenewHub issues a new hub server certificate and key in dir from the CA
// already there, so a hub certificate can be renewed every two years without
// replacing the CA and with it every agent certificate.
func RenewHub(dir string, hosts []string) (*Paths, error) {
	p := PathsIn(dir)
	dnsNames, ips, err := hubSANs(hosts)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	ca, caKey, err := loadCA(p, now)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := issueHub(ca, caKey, dnsNames, ips, now)
	if err != nil {
		return nil, err
	}
	if err := WriteKeyFile(p.HubKey, keyPEM); err != nil {
		return nil, err
	}
	if err := WriteCertFile(p.HubCert, certPEM); err != nil {
		return nil, err
	}
	return p, nil
}

func issueHub(ca *x509.Certificate, caKey crypto.Signer, dnsNames []string, ips []net.IP, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "plantsync hub", Organization: []string{"plantsync"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     clampNotAfter(now.AddDate(hubYears, 0, 0), ca),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create hub certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// loadCA reads and checks the CA of a PKI directory before it signs
// anything, so an operator learns about an expired or mismatched CA at
// issue time rather than from failing handshakes.
func loadCA(p *Paths, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	certs, err := readCertFile(p.CACert)
	if err != nil {
		return nil, nil, err
	}
	ca := certs[0]
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, fmt.Errorf("CA file %s: %w; point -dir at a directory created by `plantsync-hub pki init`", p.CACert, ErrNotCA)
	}
	if now.After(ca.NotAfter) {
		return nil, nil, fmt.Errorf("CA certificate %s %w on %s; %s",
			p.CACert, ErrExpired, ca.NotAfter.UTC().Format(time.DateOnly), renewHint(ca))
	}
	key, err := readKeyFile(p.CAKey)
	if err != nil {
		return nil, nil, err
	}
	if !publicKeyEqual(ca.PublicKey, key) {
		return nil, nil, fmt.Errorf("CA key %s does not belong to CA certificate %s: %w; restore the matching pair", p.CAKey, p.CACert, ErrKeyMismatch)
	}
	return ca, key, nil
}

// clampNotAfter keeps a leaf from outliving its CA: verifiers would reject
// it after the CA expires anyway, and a clear NotAfter avoids surprises.
func clampNotAfter(t time.Time, ca *x509.Certificate) time.Time {
	if t.After(ca.NotAfter) {
		return ca.NotAfter
	}
	return t
}

func newKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// newSerial returns a random 128-bit serial; RFC 5280 wants serials unique
// per CA, and randomness needs no state shared between invocations.
func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func caName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "hub"
		}
		name, _, _ = strings.Cut(h, ".")
		if len(name) > maxCANameLen {
			name = name[:maxCANameLen]
		}
		return name, nil
	}
	if len(name) > maxCANameLen {
		return "", fmt.Errorf("CA name %q is %d bytes long; use at most %d", name, len(name), maxCANameLen)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return "", fmt.Errorf("CA name %q contains a non-printable character; use letters, digits and spaces", name)
		}
	}
	return name, nil
}

var dnsNameRE = regexp.MustCompile(`^(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$`)

// hubSANs splits hosts into DNS names and IP addresses, always including
// the loopback names so a hub and an agent on one machine just work.
func hubSANs(hosts []string) ([]string, []net.IP, error) {
	dnsNames := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1).To4(), net.IPv6loopback}
	seenDNS := map[string]bool{"localhost": true}
	var errs []error
	for i, h := range hosts {
		h = strings.TrimSpace(h)
		if ip := net.ParseIP(h); ip != nil {
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			dup := false
			for _, have := range ips {
				dup = dup || have.Equal(ip)
			}
			if !dup {
				ips = append(ips, ip)
			}
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(h, "."))
		if len(name) > 253 || !dnsNameRE.MatchString(name) {
			errs = append(errs, fmt.Errorf("hosts[%d]: %q is neither an IP address nor a DNS name; want e.g. hub.example.com or 10.0.0.5", i, h))
			continue
		}
		if !seenDNS[name] {
			seenDNS[name] = true
			dnsNames = append(dnsNames, name)
		}
	}
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	return dnsNames, ips, nil
}
