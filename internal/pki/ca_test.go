package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestInitCreatesCAAndHub(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "berlin-hub", Hosts: []string{"hub.example.com", "10.0.0.5", "HUB.example.com.", "127.0.0.1", "fd00::7"}})

	modes := map[string]fs.FileMode{
		p.Dir:     DirMode,
		p.CACert:  CertFileMode,
		p.CAKey:   KeyFileMode,
		p.HubCert: CertFileMode,
		p.HubKey:  KeyFileMode,
	}
	for path, want := range modes {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", path, got, want)
		}
	}
	entries, err := os.ReadDir(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 {
		t.Errorf("directory holds %d entries, want 4 (no temporary files left): %v", len(entries), entries)
	}

	ca := readCert(t, p.CACert)
	if ca.Subject.CommonName != "plantsync CA berlin-hub" {
		t.Errorf("CA CN = %q", ca.Subject.CommonName)
	}
	if !ca.IsCA || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA flags: IsCA=%v MaxPathLenZero=%v KeyUsage=%v", ca.IsCA, ca.MaxPathLenZero, ca.KeyUsage)
	}
	pub, ok := ca.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", ca.PublicKey)
	}
	if y := ca.NotAfter.Sub(time.Now()).Hours() / 24 / 365; y < 9.9 || y > 10.1 {
		t.Errorf("CA valid for %.2f years, want 10", y)
	}
	if err := CheckPair(p.CACert, p.CAKey); err != nil {
		t.Error(err)
	}

	hub := readCert(t, p.HubCert)
	wantDNS := []string{"localhost", "hub.example.com"}
	if !slices.Equal(hub.DNSNames, wantDNS) {
		t.Errorf("hub DNS SANs = %v, want %v", hub.DNSNames, wantDNS)
	}
	var ips []string
	for _, ip := range hub.IPAddresses {
		ips = append(ips, ip.String())
	}
	wantIPs := []string{"127.0.0.1", "::1", "10.0.0.5", "fd00::7"}
	if !slices.Equal(ips, wantIPs) {
		t.Errorf("hub IP SANs = %v, want %v", ips, wantIPs)
	}
	if y := hub.NotAfter.Sub(time.Now()).Hours() / 24 / 365; y < 1.9 || y > 2.1 {
		t.Errorf("hub certificate valid for %.2f years, want 2", y)
	}
	if err := CheckPair(p.HubCert, p.HubKey); err != nil {
		t.Error(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, name := range []string{"localhost", "hub.example.com", "127.0.0.1", "::1", "10.0.0.5"} {
		_, err := hub.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			t.Errorf("hub certificate does not verify for %s: %v", name, err)
		}
	}
	if _, err := hub.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("hub certificate verifies for client auth; it must be a server certificate only")
	}
}

func TestInitDefaultName(t *testing.T) {
	p := newPKI(t, InitOptions{})
	cn := readCert(t, p.CACert).Subject.CommonName
	if !strings.HasPrefix(cn, "plantsync CA ") || len(cn) <= len("plantsync CA ") || len(cn) > 64 {
		t.Errorf("CA CN = %q, want \"plantsync CA <host>\" of at most 64 bytes", cn)
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "a"})
	before, err := os.ReadFile(p.CACert)
	if err != nil {
		t.Fatal(err)
	}

	_, err = Init(p.Dir, InitOptions{Name: "b"})
	if !errors.Is(err, ErrCAExists) {
		t.Fatalf("second Init: err = %v, want ErrCAExists", err)
	}
	for _, want := range []string{p.CACert, "use another -dir or remove it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	after, err := os.ReadFile(p.CACert)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("refused Init still changed ca.crt")
	}

	if _, err := Init(p.Dir, InitOptions{Name: "b", Force: true}); err != nil {
		t.Fatalf("Init with Force: %v", err)
	}
	if cn := readCert(t, p.CACert).Subject.CommonName; cn != "plantsync CA b" {
		t.Errorf("after Force, CA CN = %q, want the new CA", cn)
	}
}

func TestInitRefusesOverLeftoverKey(t *testing.T) {
	// A crash between writing ca.key and ca.crt must not let a rerun
	// silently replace the key.
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, CAKeyFile), []byte("old"), KeyFileMode)
	_, err := Init(dir, InitOptions{Name: "x"})
	if !errors.Is(err, ErrCAExists) || !strings.Contains(err.Error(), CAKeyFile) {
		t.Fatalf("err = %v, want ErrCAExists naming ca.key", err)
	}
}

func TestInitRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts InitOptions
		want []string
	}{
		{"space in host", InitOptions{Hosts: []string{"hub one"}}, []string{`hosts[0]: "hub one" is neither`}},
		{"empty host", InitOptions{Hosts: []string{"ok.example", ""}}, []string{`hosts[1]: ""`}},
		{"all bad hosts reported", InitOptions{Hosts: []string{"a..b", "ok", "-x"}}, []string{`hosts[0]: "a..b"`, `hosts[2]: "-x"`}},
		{"name too long", InitOptions{Name: strings.Repeat("n", 52)}, []string{"CA name", "at most 51"}},
		{"control character in name", InitOptions{Name: "a\tb"}, []string{"non-printable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "pki")
			_, err := Init(dir, tt.opts)
			if err == nil {
				t.Fatal("Init succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("rejected Init created %s", dir)
			}
		})
	}
}

func TestRenewHubKeepsCA(t *testing.T) {
	p := newPKI(t, InitOptions{Name: "r"})
	caBefore, _ := os.ReadFile(p.CACert)
	hubBefore := readCert(t, p.HubCert)
	agentCert, _ := issueAgentFiles(t, p.Dir, AgentRequest{ID: "a1", Plant: "p1"})

	if _, err := RenewHub(p.Dir, []string{"hub2.example.com"}); err != nil {
		t.Fatalf("RenewHub: %v", err)
	}
	caAfter, _ := os.ReadFile(p.CACert)
	if !bytes.Equal(caBefore, caAfter) {
		t.Fatal("RenewHub changed the CA")
	}
	hub := readCert(t, p.HubCert)
	if hub.SerialNumber.Cmp(hubBefore.SerialNumber) == 0 {
		t.Fatal("hub certificate not replaced")
	}
	if !slices.Contains(hub.DNSNames, "hub2.example.com") {
		t.Errorf("renewed hub DNS SANs = %v", hub.DNSNames)
	}
	if err := CheckPair(p.HubCert, p.HubKey); err != nil {
		t.Error(err)
	}
	// Agents issued before the renewal keep working against the new hub.
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, p.CACert))
	if _, err := readCert(t, agentCert).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("old agent certificate no longer verifies: %v", err)
	}
}

func TestLoadCAErrors(t *testing.T) {
	good := newPKI(t, InitOptions{Name: "good"})
	other := newPKI(t, InitOptions{Name: "other"})
	caKey := mustKey(t)

	tests := []struct {
		name    string
		setup   func(dir string)
		wantErr error
		want    string
	}{
		{
			name:    "no CA in directory",
			setup:   func(string) {},
			wantErr: fs.ErrNotExist,
			want:    "pki init",
		},
		{
			name: "key of another CA",
			setup: func(dir string) {
				copyFile(t, good.CACert, filepath.Join(dir, CACertFile))
				copyFile(t, other.CAKey, filepath.Join(dir, CAKeyFile))
			},
			wantErr: ErrKeyMismatch,
			want:    "does not belong to CA certificate",
		},
		{
			name: "leaf instead of CA",
			setup: func(dir string) {
				copyFile(t, good.HubCert, filepath.Join(dir, CACertFile))
				copyFile(t, good.HubKey, filepath.Join(dir, CAKeyFile))
			},
			wantErr: ErrNotCA,
		},
		{
			name: "expired CA",
			setup: func(dir string) {
				ca := signCert(t, &x509.Certificate{
					IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
					NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
					NotAfter:  time.Date(2021, 3, 4, 0, 0, 0, 0, time.UTC),
				}, nil, caKey, caKey.Public())
				writeTestFile(t, filepath.Join(dir, CACertFile), encodeCert(ca.Raw), CertFileMode)
				keyPEM, _ := encodeKey(caKey)
				writeTestFile(t, filepath.Join(dir, CAKeyFile), keyPEM, KeyFileMode)
			},
			wantErr: ErrExpired,
			want:    "expired on 2021-03-04; create a new CA",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(dir)
			_, _, err := IssueAgent(dir, AgentRequest{ID: "a", Plant: "p"})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if _, err := RenewHub(dir, nil); !errors.Is(err, tt.wantErr) {
				t.Errorf("RenewHub: err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, to, data, KeyFileMode)
}

func TestHubSANsNormalises(t *testing.T) {
	dns, ips, err := hubSANs([]string{" Hub.Example.com. ", "::ffff:10.1.2.3", "10.1.2.3", "*.plants.example", "under_score.local"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"localhost", "hub.example.com", "*.plants.example", "under_score.local"}; !slices.Equal(dns, want) {
		t.Errorf("dns = %v, want %v", dns, want)
	}
	if len(ips) != 3 || !ips[2].Equal(net.IPv4(10, 1, 2, 3)) {
		t.Errorf("ips = %v, want loopbacks plus 10.1.2.3 once", ips)
	}
}
