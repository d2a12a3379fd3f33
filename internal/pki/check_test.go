package pki

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckCertFile(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "t"})
	ca := readCert(t, p.CACert)
	hub := readCert(t, p.HubCert)

	// Issued 2025-01-02 12:00 UTC for a year: expires on 2026-01-02.
	start := time.Date(2025, 1, 2, 12, 0, 0, 0, time.UTC)
	agentPath, _ := issueAgentFiles(t, p.Dir, AgentRequest{ID: "press-1", Plant: "berlin", notBefore: start, Validity: 365 * 24 * time.Hour})

	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.crt")
	junk := filepath.Join(dir, "junk.crt")
	writeTestFile(t, junk, []byte("-----BEGIN NONSENSE-----\n"), CertFileMode)
	badDER := filepath.Join(dir, "bad-der.crt")
	writeTestFile(t, badDER, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), CertFileMode)

	tests := []struct {
		name    string
		path    string
		now     time.Time
		wantErr error
		want    string // exact error text when wantExact, else a substring
		exact   bool
	}{
		{name: "valid agent", path: agentPath, now: start.AddDate(0, 6, 0)},
		{name: "valid CA", path: p.CACert, now: time.Now()},
		{
			name: "expired agent", path: agentPath, now: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), wantErr: ErrExpired, exact: true,
			want: "certificate " + agentPath + " expired on 2026-01-02; issue a new one with " +
				"`plantsync-hub pki issue-agent -id press-1 -plant berlin [-csr FILE] -out DIR`",
		},
		{
			name: "not yet valid", path: agentPath, now: start.Add(-24 * time.Hour), wantErr: ErrNotYetValid,
			want: "certificate " + agentPath + " is not yet valid: valid from 2025-01-02T11:55:00Z but this machine's clock says 2025-01-01T12:00:00Z",
		},
		{
			name: "expired CA", path: p.CACert, now: ca.NotAfter.Add(time.Hour), wantErr: ErrExpired,
			want: "expired on " + ca.NotAfter.UTC().Format(time.DateOnly) + "; create a new CA with `plantsync-hub pki init",
		},
		{
			name: "expired hub", path: p.HubCert, now: hub.NotAfter.Add(time.Hour), wantErr: ErrExpired,
			want: "`plantsync-hub pki renew-hub -dir DIR`",
		},
		{name: "missing", path: missing, now: time.Now(), wantErr: fs.ErrNotExist, want: "certificate file " + missing + ": file does not exist; check the path, or create it with `plantsync-hub pki init"},
		{name: "no certificate block", path: junk, now: time.Now(), wantErr: ErrBadPEM, want: "certificate file " + junk + ": unparsable PEM: no PEM block"},
		{name: "key instead of certificate", path: p.HubKey, now: time.Now(), wantErr: ErrBadPEM, want: p.HubKey},
		{name: "corrupt DER", path: badDER, now: time.Now(), wantErr: ErrBadPEM, want: badDER},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := CheckCertFile(tt.path, tt.now)
			if tt.wantErr == nil {
				if err != nil || cert == nil {
					t.Fatalf("cert %v, err %v", cert, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.exact && err.Error() != tt.want {
				t.Errorf("error text\n got %s\nwant %s", err, tt.want)
			}
			if !tt.exact && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestRenewHint(t *testing.T) {
	key := mustKey(t)
	other := signCert(t, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}, nil, key, key.Public())
	if got := renewHint(other); got != "replace it with a current certificate" {
		t.Errorf("hint for an unrelated certificate = %q", got)
	}
}

func TestCheckKeyFile(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "t"})
	dir := t.TempDir()

	keyPEM, err := os.ReadFile(p.HubKey)
	if err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose.key")
	writeTestFile(t, loose, keyPEM, 0o644)
	encrypted := filepath.Join(dir, "enc.key")
	writeTestFile(t, encrypted, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), KeyFileMode)
	certOnly := filepath.Join(dir, "cert.key")
	copyFile(t, p.HubCert, certOnly)
	missing := filepath.Join(dir, "missing.key")

	tests := []struct {
		name    string
		path    string
		wantErr error
		want    string
	}{
		{name: "hub key", path: p.HubKey},
		{name: "CA key", path: p.CAKey},
		{name: "readable by others", path: loose, wantErr: ErrKeyPermissions, want: "key file " + loose + " has mode 0644"},
		{name: "encrypted", path: encrypted, wantErr: ErrBadPEM, want: "encrypted"},
		{name: "certificate, no key", path: certOnly, wantErr: ErrBadPEM, want: certOnly},
		{name: "missing", path: missing, wantErr: fs.ErrNotExist, want: "key file " + missing + ": file does not exist; check the path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := CheckKeyFile(tt.path)
			if tt.wantErr == nil {
				if err != nil || key == nil {
					t.Fatalf("key %v, err %v", key, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestCheckPair(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "t"})
	agentCert, agentKey := issueAgentFiles(t, p.Dir, AgentRequest{ID: "a", Plant: "p"})
	tests := []struct {
		name      string
		cert, key string
		wantErr   error
	}{
		{"CA", p.CACert, p.CAKey, nil},
		{"hub", p.HubCert, p.HubKey, nil},
		{"agent", agentCert, agentKey, nil},
		{"agent cert, hub key", agentCert, p.HubKey, ErrKeyMismatch},
		{"hub cert, CA key", p.HubCert, p.CAKey, ErrKeyMismatch},
		{"missing key", p.HubCert, filepath.Join(p.Dir, "nope.key"), fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPair(tt.cert, tt.key)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == ErrKeyMismatch && (!strings.Contains(err.Error(), tt.cert) || !strings.Contains(err.Error(), tt.key)) {
				t.Errorf("error %q does not name both files", err)
			}
		})
	}
}
