package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plantsync/plantsync/internal/pki"
	"github.com/plantsync/plantsync/internal/testkit"
)

// runCLI runs the command line in-process and returns exit code and output.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func agentYAML(ca, cert, key string) string {
	return fmt.Sprintf(`agent: {id: press-1, plant: DE-01}
uplink:
  hub: 127.0.0.1:7443
  tls: {ca: %q, cert: %q, key: %q}
sources:
  - {name: load, type: generator}
`, ca, cert, key)
}

func TestValidateGoodConfig(t *testing.T) {
	p := testkit.NewPKI(t)
	cert, key := p.Agent(t, "press-1", "DE-01")
	path := writeFile(t, "agent.yaml", agentYAML(p.Paths.CACert, cert, key))
	code, stdout, stderr := runCLI("validate", "-config", path)
	if code != 0 || stdout != path+": ok (1 sources)\n" || stderr != "" {
		t.Fatalf("validate = %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, path+": ok (1 sources)\n")
	}
}

func TestValidateBadConfigListsEveryProblem(t *testing.T) {
	p := testkit.NewPKI(t)
	cert, key := p.Agent(t, "press-2", "DE-01")
	path := writeFile(t, "agent.yaml", fmt.Sprintf(`agent: {id: press-1, plant: DE-01, colour: blue}
uplink:
  hub: hub.example.net
  tls: {ca: %q, cert: %q, key: %q}
buffer: {max_bytes: 10, overflow: drop}
sources:
  - {name: load, type: generator}
  - {name: load, type: opcua-typo}
`, p.Paths.CACert, cert, key))
	code, stdout, stderr := runCLI("validate", "-config", path)
	if code != 1 || stdout != "" {
		t.Fatalf("validate = %d, stdout %q; want 1 and nothing on stdout", code, stdout)
	}
	for _, want := range []string{
		path + ": 7 problem(s):",
		"agent.colour (line 1): not a known key",
		"sources[1].type (line 8): \"opcua-typo\" is not a source type",
		"uplink.hub: \"hub.example.net\" is not host:port",
		"buffer.max_bytes: 10 is too small",
		"buffer.overflow: \"drop\" is not a policy",
		"sources[1].name: \"load\" is already used by sources[0]",
		"uplink.tls.cert: certificate is for agent \"press-2\"",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestValidateMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	code, _, stderr := runCLI("validate", "-config", path)
	if code != 1 || !strings.Contains(stderr, "read config: open "+path) {
		t.Fatalf("validate = %d, stderr %q; want 1 naming the file", code, stderr)
	}
}

// The agent half of the CSR round trip: `plantsync-agent pki csr` makes the
// key and the request, the hub signs it (here with the library call behind
// `plantsync-hub pki issue-agent -csr`, whose own CLI test is in the hub's
// main package), and `plantsync-agent validate` accepts a config with the
// signed certificate and the key that never left the agent.
func TestPKICSRRoundTrip(t *testing.T) {
	dir := t.TempDir()
	key, csrPath := filepath.Join(dir, "keys", "press-1.key"), filepath.Join(dir, "press-1.csr")
	code, stdout, stderr := runCLI("pki", "csr", "-id", "press-1", "-key", key, "-out", csrPath)
	if code != 0 {
		t.Fatalf("pki csr = %d: %s", code, stderr)
	}
	if want := "plantsync-hub pki issue-agent -id press-1 -plant PLANT -csr " + csrPath; !strings.Contains(stdout, want) {
		t.Errorf("pki csr output %q does not tell the next step %q", stdout, want)
	}
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %04o, want 0600", st.Mode().Perm())
	}
	keyBefore, _ := os.ReadFile(key)

	// A second request reuses the key: renewing must not replace it.
	csr2 := filepath.Join(dir, "again.csr")
	if code, _, stderr := runCLI("pki", "csr", "-id", "press-1", "-key", key, "-out", csr2); code != 0 {
		t.Fatalf("second pki csr = %d: %s", code, stderr)
	}
	if keyAfter, _ := os.ReadFile(key); !bytes.Equal(keyBefore, keyAfter) {
		t.Fatal("a second pki csr replaced the existing key")
	}

	hubPKI := testkit.NewPKI(t)
	csrPEM, err := os.ReadFile(csrPath)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := pki.IssueAgent(hubPKI.Dir, pki.AgentRequest{ID: "press-1", Plant: "DE-01", CSRPEM: csrPEM})
	if err != nil {
		t.Fatal(err)
	}
	if keyPEM != nil {
		t.Fatal("signing a CSR returned a private key")
	}
	cert := filepath.Join(dir, "press-1.crt")
	if err := pki.WriteCertFile(cert, certPEM); err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, "agent.yaml", agentYAML(hubPKI.Paths.CACert, cert, key))
	if code, stdout, stderr := runCLI("validate", "-config", path); code != 0 {
		t.Fatalf("validate with the CSR-signed certificate = %d, %q, %q", code, stdout, stderr)
	}

	// The certificate of the second CSR fits the same key.
	csr2PEM, _ := os.ReadFile(csr2)
	block, _ := pem.Decode(csr2PEM)
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	block, _ = pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(req.PublicKey) {
		t.Fatal("the two CSRs carry different public keys")
	}
}

func TestPKICSRUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no subcommand", []string{"pki"}, 2, "usage:"},
		{"unknown subcommand", []string{"pki", "sign"}, 2, "usage:"},
		{"missing flags", []string{"pki", "csr", "-id", "press-1"}, 2, "-id, -key and -out are required"},
		{"bad id", []string{"pki", "csr", "-id", "press 1", "-key", filepath.Join(dir, "k"), "-out", filepath.Join(dir, "c")}, 1, `agent id "press 1" contains ' '`},
		{"key file of another kind", []string{"pki", "csr", "-id", "press-1", "-key", writeFile(t, "k.pem", "junk"), "-out", filepath.Join(dir, "c")}, 1, "no PEM private key block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("%v = %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
			}
		})
	}
}

func TestVersionPrintsOneLine(t *testing.T) {
	code, stdout, stderr := runCLI("version")
	if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "plantsync-agent ") || strings.Count(stdout, "\n") != 1 || !strings.HasSuffix(stdout, "\n") {
		t.Fatalf("version = %d, stdout %q, stderr %q; want one line starting with plantsync-agent", code, stdout, stderr)
	}
}

func TestUsage(t *testing.T) {
	if code, _, stderr := runCLI(); code != 2 || !strings.Contains(stderr, "usage:") {
		t.Errorf("no arguments = %d, %q; want 2 and usage", code, stderr)
	}
	if code, _, stderr := runCLI("start"); code != 2 || !strings.Contains(stderr, `unknown command "start"`) {
		t.Errorf("unknown command = %d, %q; want 2 naming it", code, stderr)
	}
	if code, stdout, _ := runCLI("help"); code != 0 || !strings.Contains(stdout, "plantsync-agent validate -config FILE") {
		t.Errorf("help = %d, %q; want 0 and usage on stdout", code, stdout)
	}
	if code, _, stderr := runCLI("validate", "-konfig", "x"); code != 2 || !strings.Contains(stderr, "flag provided but not defined: -konfig") {
		t.Errorf("bad flag = %d, %q; want 2 naming the flag", code, stderr)
	}
}
