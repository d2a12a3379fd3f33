package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plantsync/plantsync/hub/auth"
)

// status asks a guard built from the tokens file at path whether token may
// do what needs role.
func status(t *testing.T, path, token string, role auth.Role) int {
	t.Helper()
	g, err := auth.NewGuard(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h := g.Require(role, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	r := httptest.NewRequest(http.MethodGet, "/api/v1/agents", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code
}

func TestTokenPrintsATokenTheHubAccepts(t *testing.T) {
	code, stdout, stderr := runCLI("token", "-subject", "alice@plant.example", "-role", "approver")
	if code != 0 {
		t.Fatalf("token = %d: %s", code, stderr)
	}
	lines := strings.Split(stdout, "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "pst_") {
		t.Fatalf("no token on the second line:\n%s", stdout)
	}
	token := lines[1]
	_, entry, ok := strings.Cut(stdout, "(http.auth.tokens_file); the hub reads it within two seconds:\n")
	if !ok || strings.Contains(entry, token) {
		t.Fatalf("no tokens-file entry, or the entry holds the token itself:\n%s", stdout)
	}
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(path, []byte("tokens:\n"+entry), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := status(t, path, token, auth.Approver); got != http.StatusOK {
		t.Errorf("the printed entry: approver request = %d, want 200", got)
	}
	if got := status(t, path, token, auth.Admin); got != http.StatusForbidden {
		t.Errorf("the printed entry: admin request = %d, want 403 (role approver)", got)
	}
}

func TestTokenAddsToTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	var tokens []string
	for _, who := range []string{"alice@plant.example", "bob@plant.example"} {
		code, stdout, stderr := runCLI("token", "-subject", who, "-role", "admin", "-file", path)
		if code != 0 || !strings.Contains(stdout, "added to "+path) {
			t.Fatalf("token -file = %d: %s %s", code, stdout, stderr)
		}
		tokens = append(tokens, strings.Split(stdout, "\n")[1])
	}
	for _, tok := range tokens {
		if got := status(t, path, tok, auth.Admin); got != http.StatusOK {
			t.Errorf("token %s…: admin request = %d, want 200", tok[:8], got)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("tokens file mode: %v %v, want 0600", st.Mode(), err)
	}
	// An existing file keeps its mode (e.g. readable by the hub's group).
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI("token", "-subject", "carol@plant.example", "-file", path); code != 0 {
		t.Fatalf("third token: %s", stderr)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("tokens file mode after an append: %v %v, want 0640 kept", st.Mode(), err)
	}
	if entries, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".tokens.yaml.*")); len(entries) != 0 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestTokenRefusesBadArguments(t *testing.T) {
	code, stdout, stderr := runCLI("token", "-role", "boss")
	if code != 2 || stdout != "" || !strings.Contains(stderr, "-subject: required") || !strings.Contains(stderr, `-role: role "boss"; want viewer, approver or admin`) {
		t.Errorf("token -role boss = %d, stdout %q, stderr %q; want 2 naming both problems and no token", code, stdout, stderr)
	}
	bad := writeFile(t, "tokens.yaml", "tokens: [")
	if code, stdout, stderr := runCLI("token", "-subject", "a", "-file", bad); code != 1 || stdout != "" || !strings.Contains(stderr, bad) {
		t.Errorf("token -file with a broken file = %d, stdout %q, stderr %q; want 1 naming the file, and no token shown", code, stdout, stderr)
	}
	if raw, _ := os.ReadFile(bad); string(raw) != "tokens: [" {
		t.Errorf("the broken file was changed: %q", raw)
	}
	// A file the hub would refuse after the append (here: an entry with
	// an unknown role) is left as it is.
	const invalid = "tokens:\n  - {subject: bob, role: boss, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}\n"
	wrong := writeFile(t, "tokens.yaml", invalid)
	if code, stdout, stderr := runCLI("token", "-subject", "a", "-file", wrong); code != 1 || stdout != "" || !strings.Contains(stderr, "tokens[0].role") {
		t.Errorf("token -file with an invalid entry = %d, stdout %q, stderr %q; want 1 naming tokens[0].role, no token shown", code, stdout, stderr)
	}
	if raw, _ := os.ReadFile(wrong); string(raw) != invalid {
		t.Errorf("the invalid file was changed: %q", raw)
	}
}
