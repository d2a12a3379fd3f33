package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// File modes used for everything this package writes. Certificates are
// public; keys and the directory holding the CA key are for the owner only.
const (
	CertFileMode fs.FileMode = 0o644
	KeyFileMode  fs.FileMode = 0o600
	DirMode      fs.FileMode = 0o700
)

const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
	pemCSR         = "CERTIFICATE REQUEST"
)

// WriteFileAtomic replaces path with data so that readers see either the old
// or the new content, never a torn file: it writes a temporary file in the
// same directory, fsyncs it, renames it over path and fsyncs the directory.
// The file gets exactly perm, regardless of the umask.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return WriteFileAtomicOwned(path, data, perm, -1, -1)
}

// WriteFileAtomicOwned is WriteFileAtomic giving the new file uid and gid
// (-1 keeps this process's), e.g. those of the file it replaces. Where the
// owner cannot be given, path is left as it was.
func WriteFileAtomicOwned(path string, data []byte, perm fs.FileMode, uid, gid int) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if uid != -1 || gid != -1 {
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename durable. Windows cannot open a directory for
// syncing, and NTFS journals renames anyway.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// WriteCertFile atomically writes PEM certificate data with CertFileMode.
func WriteCertFile(path string, certPEM []byte) error {
	return WriteFileAtomic(path, certPEM, CertFileMode)
}

// WriteKeyFile atomically writes PEM private key data with KeyFileMode.
func WriteKeyFile(path string, keyPEM []byte) error {
	return WriteFileAtomic(path, keyPEM, KeyFileMode)
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}

// encodeKey uses PKCS #8 because every TLS stack and openssl read it,
// whatever the key algorithm.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// parseCerts returns every CERTIFICATE block in data, leaf first.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadPEM, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no PEM block \"-----BEGIN CERTIFICATE-----\" found", ErrBadPEM)
	}
	return certs, nil
}

// parseKey reads the first private key block in data, in any of the
// encodings openssl and Go write.
func parseKey(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%w: no PEM private key block (\"-----BEGIN PRIVATE KEY-----\") found", ErrBadPEM)
		}
		if !strings.HasSuffix(block.Type, "PRIVATE KEY") {
			continue
		}
		if block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != "" {
			return nil, fmt.Errorf("%w: the key is encrypted; plantsync needs an unencrypted key protected by file permissions", ErrBadPEM)
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadPEM, err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			return k, nil
		case *rsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("%w: unsupported private key type %T", ErrBadPEM, key)
		}
	}
}

// readFile reads a certificate or key file, turning the common failures into
// messages that name the file and what the operator should do.
func readFile(kind, path, fix string) ([]byte, error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		return data, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s file %s: %w; %s", kind, path, fs.ErrNotExist, fix)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s file %s: %w; run plantsync as the user that owns it", kind, path, fs.ErrPermission)
	default:
		return nil, fmt.Errorf("read %s file %s: %w", kind, path, err)
	}
}

const (
	missingCertFix = "check the path, or create it with `plantsync-hub pki init -dir DIR` (CA and hub) " +
		"or `plantsync-hub pki issue-agent -id ID -plant PLANT -out DIR` (agents)"
	missingKeyFix = "check the path; a key is written next to its certificate by `plantsync-hub pki init` " +
		"or `plantsync-hub pki issue-agent`, or on the plant server by `plantsync-agent pki csr`"
)

func readCertFile(path string) ([]*x509.Certificate, error) {
	data, err := readFile("certificate", path, missingCertFix)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("certificate file %s: %w; it must hold a PEM certificate as written by `plantsync-hub pki`", path, err)
	}
	return certs, nil
}

func readKeyFile(path string) (crypto.Signer, error) {
	data, err := readFile("key", path, missingKeyFix)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return key, nil
}

// publicKeyEqual reports whether pub is the public half of key.
func publicKeyEqual(pub crypto.PublicKey, key crypto.Signer) bool {
	e, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(key.Public())
}
