package agent_test

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/internal/pki"
	"github.com/plantsync/plantsync/internal/testkit"
)

// fixture is a temp PKI with the certificate files the cases refer to.
type fixture struct {
	dir  string
	vars map[string]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	p := testkit.NewPKI(t)
	dir := t.TempDir()
	cert, key := p.Agent(t, "press-1", "DE-01")
	otherCert, otherKey := p.Agent(t, "press-2", "DE-01")
	expiredCert, expiredKey := issueExpired(t, p.Dir, filepath.Join(dir, "expired"), "press-1", "DE-01")

	keyPEM, err := os.ReadFile(key)
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
	return &fixture{dir: dir, vars: map[string]string{
		"CA":           p.Paths.CACert,
		"CERT":         cert,
		"KEY":          key,
		"OTHER_CERT":   otherCert,
		"OTHER_KEY":    otherKey,
		"EXPIRED_CERT": expiredCert,
		"EXPIRED_KEY":  expiredKey,
		"LOOSE_KEY":    looseKey,
		"NOT_PEM":      notPEM,
		"MISSING":      filepath.Join(dir, "missing"),
	}}
}

// issueExpired issues an agent certificate valid for 1 ms and waits until
// it has expired. x509 stores whole seconds, so NotAfter lies at most 1 ms
// ahead and the wait is that short.
func issueExpired(t *testing.T, pkiDir, out, id, plant string) (cert, key string) {
	t.Helper()
	certPEM, keyPEM, err := pki.IssueAgent(pkiDir, pki.AgentRequest{ID: id, Plant: plant, Validity: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(out, id+".crt"), filepath.Join(out, id+".key")
	if err := pki.WriteCertFile(cert, certPEM); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(key, keyPEM); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(c.NotAfter); d > time.Second {
		t.Fatalf("certificate valid until %s, want it expired within a second", c.NotAfter)
	} else if d >= 0 {
		time.Sleep(d + time.Millisecond)
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
	problemHead = regexp.MustCompile(`^[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*( \(line \d+\))?: `)
	fixWords    = []string{"want", "e.g.", "use ", "run ", "issue ", "check ", "set ", "fix ", "remove", "keep ", "required", "must"}
)

func checkProblemShape(t *testing.T, ps []string) {
	t.Helper()
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
}

func TestLoadConfigRejectsInvalid(t *testing.T) {
	f := newFixture(t)
	for _, c := range testkit.ReadInvalidConfigs(t) {
		t.Run(c.Name, func(t *testing.T) {
			path := f.write(t, "agent.yaml", c.Config)
			_, err := agent.LoadConfig(path)
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
			want := max(c.Problems, 1)
			if n != want {
				t.Errorf("error lists %d problem(s), want %d:\n%v", n, want, err)
			}
			checkProblemShape(t, ps)
		})
	}
}

// The cases above must fail only for what they name: the same fixture with
// a correct config loads, certificates and all.
func TestLoadConfigAcceptsFixture(t *testing.T) {
	f := newFixture(t)
	path := f.write(t, "agent.yaml", `
agent: {id: press-1, plant: DE-01, state_dir: ${MISSING}/state}
uplink:
  hub: 127.0.0.1:7443
  tls: {ca: "${CA}", cert: "${CERT}", key: "${KEY}", server_name: localhost}
buffer: {max_bytes: 65536, overflow: drop_oldest}
sources:
  - {name: mes, type: mqtt, brokers: ["tcp://127.0.0.1:1883"], client_id: ps-1,
     subscriptions: [{topic: mes/+/+/completion, qos: 1, event_type: production.completion, id_field: message_id}]}
  - {name: load, type: generator, rate: 10}
metrics: {listen: "127.0.0.1:0"}
log: {level: debug, format: json}
`)
	cfg, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sources) != 2 || cfg.Sources[0].Config == nil || cfg.Sources[1].Config == nil {
		t.Fatalf("sources not resolved: %+v", cfg.Sources)
	}
	if cfg.Buffer.MaxBytes != 65536 || cfg.Buffer.Overflow != "drop_oldest" || cfg.Uplink.TLS.ServerName != "localhost" {
		t.Fatalf("values not decoded: buffer %+v, uplink.tls %+v", cfg.Buffer, cfg.Uplink.TLS)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := agent.LoadConfig(path)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("LoadConfig(missing) = %v, want a not-exist error naming the path", err)
	}
}

// Every agent config in configs/ is valid as written, except for one thing:
// the examples name certificate files where an installation keeps them
// (/etc/plantsync-agent/...), and `make run` fills in the dev certificates
// of its state folder; neither exists here. So the test decodes each file,
// points uplink.tls.ca/cert/key at a temp PKI holding a certificate issued
// for the file's own agent.id and agent.plant, and then runs the full
// LoadConfig on the result, file and certificate checks included.
func TestExampleConfigsValidate(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "configs", "agent*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no agent example config in ../configs (want configs/agent*.yaml)")
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
			id, plant := scalarAt(t, &doc, "agent", "id").Value, scalarAt(t, &doc, "agent", "plant").Value
			p := testkit.NewPKI(t)
			cert, key := p.Agent(t, id, plant)
			scalarAt(t, &doc, "uplink", "tls", "ca").Value = p.Paths.CACert
			scalarAt(t, &doc, "uplink", "tls", "cert").Value = cert
			scalarAt(t, &doc, "uplink", "tls", "key").Value = key
			out, err := yaml.Marshal(&doc)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), filepath.Base(file))
			if err := os.WriteFile(path, out, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := agent.LoadConfig(path); err != nil {
				t.Fatalf("%s (TLS paths replaced by a temp PKI's): %v", file, err)
			}
		})
	}
}

// Every file in configs/ is checked by some test: agent*.yaml here,
// hub*.yaml in package hub.
func TestExampleConfigsAreAllChecked(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "configs", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		if !strings.HasPrefix(base, "agent") && !strings.HasPrefix(base, "hub") {
			t.Errorf("configs/%s is validated by no test: name it agent*.yaml or hub*.yaml, or add a test for it", base)
		}
	}
}

// scalarAt finds the scalar at a path of mapping keys.
func scalarAt(t *testing.T, doc *yaml.Node, keys ...string) *yaml.Node {
	t.Helper()
	n := testkit.YAMLScalarAt(doc, keys...)
	if n == nil {
		t.Fatalf("example config has no single value at %s", strings.Join(keys, "."))
	}
	return n
}

// FuzzLoadConfig feeds arbitrary files to LoadConfig (testkit.FuzzConfigLoader).
func FuzzLoadConfig(f *testing.F) {
	testkit.FuzzConfigLoader(f, filepath.Join("..", "configs", "agent.example.yaml"), agent.LoadConfig)
}
