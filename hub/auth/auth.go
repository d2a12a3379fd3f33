package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/internal/config"
	"github.com/plantsync/plantsync/internal/pki"
)

// ErrTokensFile marks a tokens file that cannot be used.
var ErrTokensFile = errors.New("tokens file")

// Role is what a token may do. Higher roles include the lower ones.
type Role int

// Roles, lowest first.
const (
	Viewer Role = iota + 1
	Approver
	Admin
)

func (r Role) String() string {
	switch r {
	case Viewer:
		return "viewer"
	case Approver:
		return "approver"
	case Admin:
		return "admin"
	}
	return "none"
}

// ParseRole reads viewer, approver or admin.
func ParseRole(s string) (Role, error) {
	switch s {
	case "viewer":
		return Viewer, nil
	case "approver":
		return Approver, nil
	case "admin":
		return Admin, nil
	}
	return 0, fmt.Errorf("role %q; want viewer, approver or admin", s)
}

// Entry is one token of the tokens file.
type Entry struct {
	Subject string `yaml:"subject"`
	Role    string `yaml:"role"`
	// SHA256 is the hex SHA-256 of the token: printf %s "$TOKEN" | sha256sum
	SHA256 string `yaml:"sha256"`
}

// File is the tokens file's shape.
type File struct {
	Tokens []Entry `yaml:"tokens"`
}

type principal struct {
	subject string
	role    Role
}

// Hash is the hex SHA-256 the tokens file stores for a token.
func Hash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// NewToken makes a random token (256 bits) with its hash.
func NewToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("new token: %w", err)
	}
	token = "pst_" + base64.RawURLEncoding.EncodeToString(b)
	return token, Hash(token), nil
}

// parse reads a tokens file's content; name labels errors.
func parse(name string, raw []byte) (map[string]principal, error) {
	f, err := decodeFile(name, raw)
	if err != nil {
		return nil, err
	}
	return principals(name, f)
}

// decodeFile reads a tokens file strictly (unknown keys are errors).
func decodeFile(name string, raw []byte) (File, error) {
	var f File
	if err := config.Decode(name, raw, &f); err != nil {
		return f, fmt.Errorf("%w: %v", ErrTokensFile, err)
	}
	return f, nil
}

// principals checks every entry of f and indexes them by hash.
func principals(name string, f File) (map[string]principal, error) {
	out := make(map[string]principal, len(f.Tokens))
	var errs []string
	for i, e := range f.Tokens {
		p := fmt.Sprintf("tokens[%d]", i)
		role, err := ParseRole(e.Role)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s.role: %v", p, err))
		}
		if strings.TrimSpace(e.Subject) == "" {
			errs = append(errs, p+".subject: empty; want who holds the token, e.g. alice@plant.example (it is recorded in audit trails)")
		}
		h := strings.ToLower(e.SHA256)
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			errs = append(errs, p+".sha256: want 64 hex digits, the SHA-256 of the token (printf %s \"$TOKEN\" | sha256sum)")
			continue
		}
		if _, dup := out[h]; dup {
			errs = append(errs, p+".sha256: the same token is listed twice")
		}
		out[h] = principal{subject: e.Subject, role: role}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %s: %s", ErrTokensFile, name, strings.Join(errs, "; "))
	}
	return out, nil
}

// Check reads and validates a tokens file (for config validation).
func Check(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrTokensFile, err)
	}
	_, err = parse(path, raw)
	return err
}

// AppendToken adds a token entry to a tokens file, creating it (0600)
// when missing. The existing file and the result are both checked as the
// hub reads them before anything is written (an entry the hub would refuse,
// or a key it does not know, stops it: nothing is dropped), and the result
// replaces the file in one rename where it can (same folder writable, the
// owner kept); otherwise it is written in place, which keeps mode and owner.
func AppendToken(path, subject string, role Role, hash string) error {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real // replace the target, not the link
	}
	var f File
	mode, owner := os.FileMode(0o600), (*syscall.Stat_t)(nil)
	if raw, err := os.ReadFile(path); err == nil {
		if f, err = decodeFile(path, raw); err != nil {
			return err
		}
		if _, err := principals(path, f); err != nil {
			return err
		}
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
			owner, _ = st.Sys().(*syscall.Stat_t)
		}
	} else if !os.IsNotExist(err) {
		return fmt.Errorf("%w: %v", ErrTokensFile, err)
	}
	f.Tokens = append(f.Tokens, Entry{Subject: subject, Role: role.String(), SHA256: hash})
	out, err := yaml.Marshal(&f)
	if err != nil {
		return err
	}
	out = append([]byte("# plantsync-hub API tokens: SHA-256 of each bearer token, never the token.\n"), out...)
	if _, err := parse(path, out); err != nil {
		return err
	}
	uid, gid := -1, -1
	if owner != nil && (int(owner.Uid) != os.Getuid() || int(owner.Gid) != os.Getgid()) {
		uid, gid = int(owner.Uid), int(owner.Gid)
	}
	err = pki.WriteFileAtomicOwned(path, out, mode, uid, gid)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, fs.ErrPermission):
		// Only a folder or owner we may not write falls back to writing
		// in place: after any other failure (a full disk) that would
		// leave a torn file, and every API user locked out.
		return fmt.Errorf("%w: %v", ErrTokensFile, err)
	}
	if err := os.WriteFile(path, out, mode); err != nil {
		return fmt.Errorf("%w: write %s: %v", ErrTokensFile, path, err)
	}
	return nil
}

// Guard authenticates API requests. The zero value refuses everything.
type Guard struct {
	path string
	log  *slog.Logger

	mu      sync.Mutex
	tokens  map[string]principal
	modTime time.Time
	size    int64
	checked time.Time
}

// recheck is how often a request may stat the tokens file for changes.
const recheck = 2 * time.Second

// NewGuard loads the tokens file. An empty path refuses every request with
// a message saying how to configure tokens.
func NewGuard(path string, logger *slog.Logger) (*Guard, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &Guard{path: path, log: logger}
	if path == "" {
		return g, nil
	}
	if err := g.reload(time.Now()); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *Guard) reload(now time.Time) error {
	st, err := os.Stat(g.path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrTokensFile, err)
	}
	g.checked = now
	if g.tokens != nil && st.ModTime().Equal(g.modTime) && st.Size() == g.size {
		return nil
	}
	raw, err := os.ReadFile(g.path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrTokensFile, err)
	}
	toks, err := parse(g.path, raw)
	if err != nil {
		return err
	}
	if g.tokens != nil {
		g.log.Info("tokens file reloaded", "path", g.path, "tokens", len(toks))
	}
	g.tokens, g.modTime, g.size = toks, st.ModTime(), st.Size()
	return nil
}

func (g *Guard) lookup(token string) (principal, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.path == "" {
		return principal{}, false
	}
	if now := time.Now(); now.Sub(g.checked) > recheck {
		if err := g.reload(now); err != nil {
			// Keep serving with the tokens last read rather than locking
			// every operator out because of a bad edit.
			g.log.Error("tokens file not reloaded; keeping the previous tokens", "error", err)
		}
	}
	p, ok := g.tokens[Hash(token)]
	return p, ok
}

type ctxKey struct{}

// Subject is the authenticated subject of a request ("" when none).
func Subject(ctx context.Context) string {
	p, _ := ctx.Value(ctxKey{}).(principal)
	return p.subject
}

// RoleOf is the authenticated role of a request (0 when none).
func RoleOf(ctx context.Context) Role {
	p, _ := ctx.Value(ctxKey{}).(principal)
	return p.role
}

// Require wraps h so that only tokens with at least role reach it.
func (g *Guard) Require(role Role, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		scheme, token, _ := strings.Cut(authz, " ")
		if authz == "" || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			msg := "missing bearer token; send Authorization: Bearer <token>"
			if g.path == "" {
				msg = "no API tokens are configured on this hub; set http.auth.tokens_file (see docs/configuration.md)"
			}
			deny(w, http.StatusUnauthorized, msg)
			return
		}
		p, ok := g.lookup(strings.TrimSpace(token))
		if !ok {
			deny(w, http.StatusUnauthorized, "unknown or revoked token")
			return
		}
		if p.role < role {
			deny(w, http.StatusForbidden, fmt.Sprintf("%s has role %s; this needs %s", p.subject, p.role, role))
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, p)))
	})
}

func deny(w http.ResponseWriter, code int, msg string) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="plantsync-hub"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
