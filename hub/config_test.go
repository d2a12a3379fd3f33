package hub_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/hub"
	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/internal/pki"
	"github.com/plantsync/plantsync/internal/testkit"
)

// fixture is a temp PKI with the certificate files the cases refer to.
type fixture struct {
	vars map[string]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	p := testkit.NewPKI(t)
	dir := t.TempDir()
	_, agentKey := p.Agent(t, "press-1", "DE-01")
	expiredHubCert, expiredHubKey := writeExpired(t, filepath.Join(dir, "expired-hub"), false)
	expiredCA, _ := writeExpired(t, filepath.Join(dir, "expired-ca"), true)

	keyPEM, err := os.ReadFile(p.Paths.HubKey)
	if err != nil {
		t.Fatal(err)
	}
	looseKey := filepath.Join(dir, "loose.key")
	if err := os.WriteFile(looseKey, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(looseKey, 0o644); err != nil { // past the umask
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not-pem.crt")
	if err := os.WriteFile(notPEM, []byte("this is not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &fixture{vars: map[string]string{
		"CA":               p.Paths.CACert,
		"HUB_CERT":         p.Paths.HubCert,
		"HUB_KEY":          p.Paths.HubKey,
		"AGENT_KEY":        agentKey,
		"EXPIRED_HUB_CERT": expiredHubCert,
		"EXPIRED_HUB_KEY":  expiredHubKey,
		"EXPIRED_CA":       expiredCA,
		"LOOSE_KEY":        looseKey,
		"NOT_PEM":          notPEM,
		"MISSING":          filepath.Join(dir, "missing"),
	}}
}

// writeExpired writes a self-signed certificate that expired yesterday: a
// CA, or a hub server certificate. Validation reads each file on its own,
// so the missing chain does not matter; what is checked is the date and the
// renewal hint for the kind of certificate.
func writeExpired(t *testing.T, dir string, isCA bool) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "plantsync hub"},
		NotBefore:    now.Add(-48 * time.Hour),
		NotAfter:     now.Add(-24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
	}
	if isCA {
		tmpl.Subject.CommonName = "plantsync CA old"
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.crt"), filepath.Join(dir, "cert.key")
	if err := pki.WriteCertFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (f *fixture) expand(t *testing.T, s string) string {
	t.Helper()
	return os.Expand(s, func(name string) string {
		v, ok := f.vars[name]
		if !ok {
			t.Fatalf("unknown placeholder ${%s}", name)
		}
		return v
	})
}

func (f *fixture) write(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(f.expand(t, text)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A problem reads "FIELD.PATH[ (line N)]: what is wrong; what to do".
var (
	problemHead = regexp.MustCompile(`^[a-z_]+(\[\d+\])?(\.[a-z_][a-z0-9_]*(\[\d+\])?)*( \(line \d+\))?: `)
	fixWords    = []string{"want", "e.g.", "use ", "run ", "issue ", "check ", "set ", "fix ", "remove", "keep ", "required", "must"}
)

func TestLoadConfigRejectsInvalid(t *testing.T) {
	f := newFixture(t)
	for _, c := range testkit.ReadInvalidConfigs(t) {
		t.Run(c.Name, func(t *testing.T) {
			path := f.write(t, "hub.yaml", c.Config)
			_, err := hub.LoadConfig(path)
			if err == nil {
				t.Fatal("LoadConfig accepted the config")
			}
			t.Log(err) // what an operator sees, for review with -v
			if !errors.Is(err, config.ErrInvalid) {
				t.Errorf("error does not wrap config.ErrInvalid: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "invalid config: "+path+": ") {
				t.Errorf("error does not start with the file name: %v", err)
			}
			for _, want := range c.Errors {
				if want = f.expand(t, want); !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q; got:\n%v", want, err)
				}
			}
			ps := testkit.ConfigProblems(err)
			n := len(ps)
			if n == 0 {
				n = 1 // a YAML syntax error stands alone
			}
			if want := max(c.Problems, 1); n != want {
				t.Errorf("error lists %d problem(s), want %d:\n%v", n, want, err)
			}
			for _, p := range ps {
				if !problemHead.MatchString(p) {
					t.Errorf("problem does not start with its field path: %q", p)
				}
				hasFix := false
				for _, w := range fixWords {
					hasFix = hasFix || strings.Contains(p, w)
				}
				if !hasFix {
					t.Errorf("problem does not say how to fix it: %q", p)
				}
			}
		})
	}
}

// The cases above must fail only for what they name: the same fixture with
// a correct config loads, certificates and all.
func TestLoadConfigAcceptsFixture(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "hub.yaml", `
grpc:
  listen: 127.0.0.1:7443
  tls: {cert: "${HUB_CERT}", key: "${HUB_KEY}", client_ca: "${CA}"}
  max_batch_events: 500
http:
  listen: 127.0.0.1:8443
  tls: {cert: "${HUB_CERT}", key: "${HUB_KEY}"}
storage:
  dir: ${MISSING}/storage
  retention: {max_age: 48h, max_bytes: 0, interval: 10s}
pki: {dir: ${MISSING}/pki}
log: {level: warn, format: json}
`)
	cfg, err := hub.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GRPC.MaxBatchEvents != 500 || cfg.Storage.Retention.MaxAge != 48*time.Hour || cfg.Storage.Retention.MaxBytes != 0 {
		t.Fatalf("values not decoded: grpc %+v, storage %+v", cfg.GRPC, cfg.Storage)
	}
}

// Every hub config in configs/ is valid as written, except for one thing:
// the examples name certificate files where an installation keeps them
// (/var/lib/plantsync-hub/pki/...), and `make run` fills in the dev
// certificates of its state folder; neither exists here. So the test
// decodes each file, points grpc.tls (and http.tls, when the file sets it)
// at a temp PKI's files, and then runs the full LoadConfig on the result,
// file and certificate checks included.
func TestExampleConfigsValidate(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "configs", "hub*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no hub example config in ../configs (want configs/hub*.yaml)")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var doc yaml.Node
			if err := yaml.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			p := testkit.NewPKI(t)
			set := func(path string, required bool, value string) {
				if n := testkit.YAMLScalarAt(&doc, strings.Split(path, ".")...); n != nil {
					n.Value = value
				} else if required {
					t.Fatalf("example config has no %s", path)
				}
			}
			set("grpc.tls.cert", true, p.Paths.HubCert)
			set("grpc.tls.key", true, p.Paths.HubKey)
			set("grpc.tls.client_ca", true, p.Paths.CACert)
			set("http.tls.cert", false, p.Paths.HubCert)
			set("http.tls.key", false, p.Paths.HubKey)
			out, err := yaml.Marshal(&doc)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), filepath.Base(file))
			if err := os.WriteFile(path, out, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := hub.LoadConfig(path); err != nil {
				t.Fatalf("%s (TLS paths replaced by a temp PKI's): %v", file, err)
			}
		})
	}
}

// FuzzLoadConfig feeds arbitrary files to LoadConfig (testkit.FuzzConfigLoader).
func FuzzLoadConfig(f *testing.F) {
	testkit.FuzzConfigLoader(f, filepath.Join("..", "configs", "hub.example.yaml"), hub.LoadConfig)
}
