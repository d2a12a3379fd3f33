package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/internal/pki"
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

// pkiInit runs `plantsync-hub pki init` into a temp folder.
func pkiInit(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	code, stdout, stderr := runCLI("pki", "init", "-dir", dir, "-name", "test", "-hosts", "hub.example.net,10.0.0.5")
	if code != 0 {
		t.Fatalf("pki init = %d: %s", code, stderr)
	}
	for _, f := range []string{"ca.crt", "hub.crt", "hub.key"} {
		if !strings.Contains(stdout, filepath.Join(dir, f)) {
			t.Errorf("pki init output does not name %s: %q", f, stdout)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.key")); err != nil {
		t.Errorf("pki init did not write ca.key: %v", err)
	}
	return dir
}

func hubYAML(dir string) string {
	return fmt.Sprintf(`grpc:
  listen: 127.0.0.1:7443
  tls: {cert: %q, key: %q, client_ca: %q}
storage: {dir: %q}
pki: {dir: %q}
`, filepath.Join(dir, "hub.crt"), filepath.Join(dir, "hub.key"), filepath.Join(dir, "ca.crt"), filepath.Join(dir, "storage"), dir)
}

func TestValidateGoodConfig(t *testing.T) {
	dir := pkiInit(t)
	path := writeFile(t, "hub.yaml", hubYAML(dir))
	code, stdout, stderr := runCLI("validate", "-config", path)
	if code != 0 || stdout != path+": ok\n" || stderr != "" {
		t.Fatalf("validate = %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, path+": ok\n")
	}
}

func TestValidateBadConfigListsEveryProblem(t *testing.T) {
	dir := pkiInit(t)
	path := writeFile(t, "hub.yaml", fmt.Sprintf(`grpc:
  listen: "7443"
  tls: {cert: %q, key: %q, client_ca: %q}
  max_inflight_batches: 0
http: {listen: 127.0.0.1:8080, tls: {cert: %q}}
storage: {dir: "", retention: {max_age: 1 month}}
partners: [{name: acme, types: [supplier.confirmation], plants: [DE-01]}]
`, filepath.Join(dir, "hub.crt"), filepath.Join(dir, "hub.key"), filepath.Join(dir, "missing.crt"), filepath.Join(dir, "hub.crt")))
	code, stdout, stderr := runCLI("validate", "-config", path)
	if code != 1 || stdout != "" {
		t.Fatalf("validate = %d, stdout %q; want 1 and nothing on stdout", code, stdout)
	}
	for _, want := range []string{
		path + ": 7 problem(s):",
		"storage.retention.max_age (line 6): \"1 month\" is not a duration",
		"grpc.listen: \"7443\" is not host:port",
		"grpc.max_inflight_batches: 0 out of range",
		"http.tls: set both cert and key",
		"storage.dir: required",
		"partners[0].auth: set token_file",
		"grpc.tls.client_ca: certificate file " + filepath.Join(dir, "missing.crt") + ": file does not exist",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestPKIInitRefusesToReplaceCA(t *testing.T) {
	dir := pkiInit(t)
	before, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	code, _, stderr := runCLI("pki", "init", "-dir", dir)
	if code != 1 || !strings.Contains(stderr, "refusing to overwrite") || !strings.Contains(stderr, "use another -dir or remove it") {
		t.Fatalf("second pki init = %d, %q; want 1, refusing with the fix", code, stderr)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); !bytes.Equal(before, after) {
		t.Fatal("a refused pki init changed ca.crt")
	}
}

func TestPKIRenewHubKeepsCA(t *testing.T) {
	dir := pkiInit(t)
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	hubCert, _ := os.ReadFile(filepath.Join(dir, "hub.crt"))
	if code, _, stderr := runCLI("pki", "renew-hub", "-dir", dir); code != 0 {
		t.Fatalf("pki renew-hub = %d: %s", code, stderr)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); !bytes.Equal(ca, after) {
		t.Error("renew-hub changed the CA")
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "hub.crt")); bytes.Equal(hubCert, after) {
		t.Error("renew-hub did not replace hub.crt")
	}
	path := writeFile(t, "hub.yaml", hubYAML(dir))
	if code, _, stderr := runCLI("validate", "-config", path); code != 0 {
		t.Fatalf("validate after renew-hub = %d: %s", code, stderr)
	}
}

// agentConfig loads an agent config using the given certificate files with
// the agent's own loader: the certificates the hub CLI issues must be what
// `plantsync-agent validate` accepts.
func agentConfig(t *testing.T, ca, cert, key string) error {
	t.Helper()
	path := writeFile(t, "agent.yaml", fmt.Sprintf(`agent: {id: press-1, plant: DE-01}
uplink:
  hub: 127.0.0.1:7443
  tls: {ca: %q, cert: %q, key: %q}
sources:
  - {name: load, type: generator}
`, ca, cert, key))
	_, err := agent.LoadConfig(path)
	return err
}

// The hub half of the CSR round trip: the agent makes key and request (with
// pki.NewCSR, what `plantsync-agent pki csr` runs; that CLI's own test is in
// the agent's main package), `plantsync-hub pki issue-agent -csr` signs it
// without ever seeing the key, and the agent config with the result loads.
func TestPKIIssueAgentFromCSR(t *testing.T) {
	dir := pkiInit(t)
	plant := t.TempDir()
	key := filepath.Join(plant, "press-1.key")
	csrPEM, err := pki.NewCSR(key, "press-1")
	if err != nil {
		t.Fatal(err)
	}
	csr := filepath.Join(plant, "press-1.csr")
	if err := os.WriteFile(csr, csrPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	code, stdout, stderr := runCLI("pki", "issue-agent", "-dir", dir, "-id", "press-1", "-plant", "DE-01", "-csr", csr, "-out", out)
	if code != 0 {
		t.Fatalf("pki issue-agent -csr = %d: %s", code, stderr)
	}
	if strings.Contains(stdout, "key:") {
		t.Errorf("issue-agent -csr mentions a key: %q", stdout)
	}
	if _, err := os.Stat(filepath.Join(out, "press-1.key")); !os.IsNotExist(err) {
		t.Errorf("issue-agent -csr wrote a key file (stat: %v)", err)
	}
	if err := agentConfig(t, filepath.Join(out, "ca.crt"), filepath.Join(out, "press-1.crt"), key); err != nil {
		t.Fatalf("agent config with the CSR-signed certificate: %v", err)
	}
	// The certificate carries the identity the hub chose, not one the
	// request could claim: for another id, the agent config does not fit.
	if code, _, stderr := runCLI("pki", "issue-agent", "-dir", dir, "-id", "press-9", "-plant", "DE-01", "-csr", csr, "-out", out); code != 0 {
		t.Fatalf("pki issue-agent -id press-9 = %d: %s", code, stderr)
	}
	err = agentConfig(t, filepath.Join(out, "ca.crt"), filepath.Join(out, "press-9.crt"), key)
	if err == nil || !strings.Contains(err.Error(), `certificate is for agent "press-9"`) {
		t.Fatalf("agent config press-1 with press-9's certificate: %v", err)
	}
}

func TestPKIIssueAgentWithNewKey(t *testing.T) {
	dir := pkiInit(t)
	out := t.TempDir()
	code, stdout, stderr := runCLI("pki", "issue-agent", "-dir", dir, "-id", "press-1", "-plant", "DE-01", "-out", out)
	if code != 0 {
		t.Fatalf("pki issue-agent = %d: %s", code, stderr)
	}
	key := filepath.Join(out, "press-1.key")
	if !strings.Contains(stdout, "key: "+key) || !strings.Contains(stdout, "delete it here") {
		t.Errorf("output does not name the key and what to do with it: %q", stdout)
	}
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %04o, want 0600", st.Mode().Perm())
	}
	if err := agentConfig(t, filepath.Join(out, "ca.crt"), filepath.Join(out, "press-1.crt"), key); err != nil {
		t.Fatalf("agent config with the issued certificate: %v", err)
	}
}

func TestPKIIssueAgentErrors(t *testing.T) {
	dir := pkiInit(t)
	out := t.TempDir()
	notCSR := writeFile(t, "x.csr", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"missing CSR file", []string{"-id", "press-1", "-plant", "DE-01", "-csr", filepath.Join(out, "none.csr")}, 1,
			[]string{"pki issue-agent: -csr:", "none.csr"}},
		{"not a CSR", []string{"-id", "press-1", "-plant", "DE-01", "-csr", notCSR}, 1,
			[]string{notCSR, "bad certificate signing request", "create one with `plantsync-agent pki csr`"}},
		{"bad plant", []string{"-id", "press-1", "-plant", "DE 01"}, 1,
			[]string{`plant "DE 01" contains ' '`}},
		{"no CA in -dir", []string{"-dir", t.TempDir(), "-id", "press-1", "-plant", "DE-01"}, 1,
			[]string{"ca.crt", "file does not exist", "plantsync-hub pki init"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"pki", "issue-agent", "-dir", dir, "-out", out}, tc.args...)
			code, _, stderr := runCLI(args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q: %q", w, stderr)
				}
			}
		})
	}
}

func TestVersionPrintsOneLine(t *testing.T) {
	code, stdout, stderr := runCLI("version")
	if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "plantsync-hub ") || strings.Count(stdout, "\n") != 1 || !strings.HasSuffix(stdout, "\n") {
		t.Fatalf("version = %d, stdout %q, stderr %q; want one line starting with plantsync-hub", code, stdout, stderr)
	}
}

func TestUsage(t *testing.T) {
	if code, _, stderr := runCLI(); code != 2 || !strings.Contains(stderr, "usage:") {
		t.Errorf("no arguments = %d, %q; want 2 and usage", code, stderr)
	}
	if code, _, stderr := runCLI("serve"); code != 2 || !strings.Contains(stderr, `unknown command "serve"`) {
		t.Errorf("unknown command = %d, %q; want 2 naming it", code, stderr)
	}
	if code, _, stderr := runCLI("pki", "revoke"); code != 2 || !strings.Contains(stderr, `unknown pki command "revoke"`) {
		t.Errorf("unknown pki command = %d, %q; want 2 naming it", code, stderr)
	}
	if code, stdout, _ := runCLI("help"); code != 0 || !strings.Contains(stdout, "plantsync-hub pki issue-agent") {
		t.Errorf("help = %d, %q; want 0 and usage on stdout", code, stdout)
	}
}
