package auth

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGuardRolesAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	viewerTok, viewerHash, _ := NewToken()
	adminTok, adminHash, _ := NewToken()
	if err := AppendToken(path, "vera", Viewer, viewerHash); err != nil {
		t.Fatal(err)
	}
	if err := AppendToken(path, "ada", Admin, adminHash); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("tokens file mode %v", st.Mode())
	}
	g, err := NewGuard(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := g.Require(Approver, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(Subject(r.Context()) + "/" + RoleOf(r.Context()).String()))
	}))
	call := func(authz string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/api/v1/approvals/1/approve", nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, c := range []struct {
		authz string
		code  int
		body  string
	}{
		{"", 401, "missing bearer token"},
		{"Basic abc", 401, "missing bearer token"},
		{"Bearer nope", 401, "unknown or revoked token"},
		{"Bearer " + viewerTok, 403, "vera has role viewer; this needs approver"},
		{"bearer " + adminTok, 200, "ada/admin"},
	} {
		rec := call(c.authz)
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.body) {
			t.Errorf("%q: %d %s; want %d %q", c.authz, rec.Code, rec.Body, c.code, c.body)
		}
		if c.code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%q: 401 without WWW-Authenticate", c.authz)
		}
	}
	// Revoking ada takes effect without a restart.
	if err := os.WriteFile(path, []byte("tokens:\n  - subject: vera\n    role: approver\n    sha256: "+viewerHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.checked = time.Time{}
	g.modTime = time.Time{}
	g.mu.Unlock()
	if rec := call("Bearer " + adminTok); rec.Code != 401 {
		t.Fatalf("revoked token: %d", rec.Code)
	}
	if rec := call("Bearer " + viewerTok); rec.Code != 200 {
		t.Fatalf("promoted token: %d %s", rec.Code, rec.Body)
	}
}

func TestNoTokensFileRefusesAll(t *testing.T) {
	g, err := NewGuard("", nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/v1/events", nil)
	g.Require(Viewer, http.NotFoundHandler()).ServeHTTP(rec, req)
	if rec.Code != 401 || !strings.Contains(rec.Body.String(), "http.auth.tokens_file") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

func TestParseErrors(t *testing.T) {
	_, err := parse("t.yaml", []byte("tokens:\n  - subject: ''\n    role: root\n    sha256: xyz\n"))
	for _, want := range []string{"tokens[0].role: role \"root\"", "tokens[0].subject: empty", "tokens[0].sha256: want 64 hex digits"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v; want %q", err, want)
		}
	}
	if _, err := parse("t.yaml", []byte("tokenz: []\n")); err == nil || !strings.Contains(err.Error(), "tokenz") {
		t.Errorf("unknown key: %v", err)
	}
}

// Appending through a symlink updates the file it points to and keeps the
// link; an existing file with a key the hub does not know is refused as it
// is, so nothing in it is dropped by the rewrite.
func TestAppendTokenKeepsLinksAndRefusesUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real-tokens.yaml")
	link := filepath.Join(dir, "tokens.yaml")
	_, h1, _ := NewToken()
	if err := AppendToken(target, "vera", Viewer, h1); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	tok2, h2, _ := NewToken()
	if err := AppendToken(link, "ada", Admin, h2); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi.Mode(), err)
	}
	g, err := NewGuard(target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := g.lookup(tok2); !ok || p.subject != "ada" {
		t.Errorf("the token added through the link is not in the target: %+v %v", p, ok)
	}

	odd := filepath.Join(dir, "odd.yaml")
	const content = "tokens:\n  - {subject: bob, role: admin, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, expires: 2027-01-01}\n"
	if err := os.WriteFile(odd, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	_, h3, _ := NewToken()
	if err := AppendToken(odd, "carol", Viewer, h3); err == nil || !strings.Contains(err.Error(), "expires") {
		t.Errorf("a file with an unknown key: %v, want a refusal naming it", err)
	}
	if raw, _ := os.ReadFile(odd); string(raw) != content {
		t.Errorf("the refused file changed: %q", raw)
	}
}
