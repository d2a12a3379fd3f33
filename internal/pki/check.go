package pki

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"
)

// CheckCertFile reads the first certificate in a PEM file and checks that it
// is valid at now. Every error names the file and says how to fix it; it
// wraps fs.ErrNotExist, ErrBadPEM, ErrNotYetValid or ErrExpired. With the
// last two the certificate is returned too, so a caller can show its details.
func CheckCertFile(path string, now time.Time) (*x509.Certificate, error) {
	certs, err := readCertFile(path)
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	if now.Before(cert.NotBefore) {
		return cert, fmt.Errorf("certificate %s is %w: valid from %s but this machine's clock says %s; fix the clock (NTP) on this machine or on the hub that issued it",
			path, ErrNotYetValid, cert.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(cert.NotAfter) {
		return cert, fmt.Errorf("certificate %s %w on %s; %s",
			path, ErrExpired, cert.NotAfter.UTC().Format(time.DateOnly), renewHint(cert))
	}
	return cert, nil
}

// renewHint says which command replaces an expired certificate, judged by
// what the certificate is for.
func renewHint(cert *x509.Certificate) string {
	if cert.IsCA {
		return "create a new CA with `plantsync-hub pki init -dir DIR` in an empty directory and issue every agent a new certificate"
	}
	if id, plant, err := AgentIdentity(cert); err == nil {
		return fmt.Sprintf("issue a new one with `plantsync-hub pki issue-agent -id %s -plant %s [-csr FILE] -out DIR`", id, plant)
	}
	if slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return "issue a new hub certificate from the existing CA with `plantsync-hub pki renew-hub -dir DIR`"
	}
	return "replace it with a current certificate"
}

// CheckKeyFile reads a PEM private key file and checks that only its owner
// can read it. It wraps fs.ErrNotExist, ErrBadPEM or ErrKeyPermissions; with
// the last the key is returned too, for callers that only want to warn.
func CheckKeyFile(path string) (crypto.Signer, error) {
	key, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	// Windows has ACLs instead of mode bits; Go reports them as 0666.
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("key file %s: %w", path, err)
		}
		if mode := fi.Mode().Perm(); mode&0o077 != 0 {
			return key, fmt.Errorf("key file %s has mode %04o: %w; run `chmod 600 %s`", path, mode, ErrKeyPermissions, path)
		}
	}
	return key, nil
}

// CheckPair checks that the private key in keyFile belongs to the first
// certificate in certFile. It wraps ErrKeyMismatch when it does not.
func CheckPair(certFile, keyFile string) error {
	certs, err := readCertFile(certFile)
	if err != nil {
		return err
	}
	key, err := readKeyFile(keyFile)
	if err != nil {
		return err
	}
	if !publicKeyEqual(certs[0].PublicKey, key) {
		return fmt.Errorf("key file %s does not match certificate %s: %w; use the key the certificate was issued for, "+
			"or issue a new certificate for this key (`plantsync-agent pki csr -key %s ...`, then `plantsync-hub pki issue-agent ... -csr FILE`)",
			keyFile, certFile, ErrKeyMismatch, keyFile)
	}
	return nil
}
