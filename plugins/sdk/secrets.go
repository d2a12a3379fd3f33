package sdk

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/plantsync/plantsync/internal/config"
)

// Redacted replaces a secret value in everything a plugin logs or answers.
const Redacted = "[redacted]"

// minSecretLen is the shortest value scrubbed: replacing every occurrence
// of one or two characters would wipe the logs, and such a value protects
// nothing anyway.
const minSecretLen = 4

// Scrubber replaces secret values (and their JSON-, URL- and
// base64-encoded forms) with Redacted. The zero value and nil scrub
// nothing.
type Scrubber struct {
	r *strings.Replacer
}

// NewScrubber scrubs the given values; values shorter than 4 characters
// are ignored.
func NewScrubber(secrets ...string) *Scrubber {
	seen := map[string]bool{}
	var forms []string
	for _, s := range secrets {
		if len(s) < minSecretLen {
			continue
		}
		q, _ := json.Marshal(s)
		for _, f := range []string{
			s,
			string(q[1 : len(q)-1]),
			url.QueryEscape(s),
			url.PathEscape(s),
			base64.StdEncoding.EncodeToString([]byte(s)),
			base64.RawStdEncoding.EncodeToString([]byte(s)),
			base64.URLEncoding.EncodeToString([]byte(s)),
			base64.RawURLEncoding.EncodeToString([]byte(s)),
		} {
			if len(f) >= minSecretLen && !seen[f] {
				seen[f] = true
				forms = append(forms, f)
			}
		}
	}
	if len(forms) == 0 {
		return &Scrubber{}
	}
	// The replacer tries old strings in argument order at each position:
	// longest first, so a secret containing another is replaced whole.
	sort.Slice(forms, func(i, j int) bool { return len(forms[i]) > len(forms[j]) })
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, Redacted)
	}
	return &Scrubber{r: strings.NewReplacer(pairs...)}
}

// Scrub returns s with every secret replaced.
func (sc *Scrubber) Scrub(s string) string {
	if sc == nil || sc.r == nil {
		return s
	}
	return sc.r.Replace(s)
}

// secretKey matches config keys that hold secrets. Their values must be
// references (file:PATH or env:NAME, as everywhere in plantsync); the host
// resolves them before the plugin sees the config and scrubs the values.
var secretKey = regexp.MustCompile(`(?i)(password|passwd|passphrase|secret|token|api_?key|private_?key|credential|authorization)`)

// Keys that merely name where a secret is or how it travels (a file path,
// a header name) are not secrets themselves.
var notSecretSuffix = regexp.MustCompile(`(?i)_(file|path|url|header|env|field|name)$`)

// IsSecretKey reports whether a plugin config key holds a secret.
func IsSecretKey(key string) bool {
	return secretKey.MatchString(key) && !notSecretSuffix.MatchString(key)
}

// ResolveSecrets returns a copy of cfg with every secret reference under a
// secret-named key (IsSecretKey) resolved, and the resolved values. An
// inline secret is an error naming the field: secrets never sit in a
// config file. prefix names the section in errors, e.g. "plugins[0].config".
func ResolveSecrets(prefix string, cfg map[string]any) (map[string]any, []string, error) {
	var secrets []string
	var errs []string
	var walk func(path string, v any, secret bool) any
	walk = func(path string, v any, secret bool) any {
		switch x := v.(type) {
		case map[string]any:
			out := make(map[string]any, len(x))
			for k, e := range x {
				out[k] = walk(path+"."+k, e, secret || IsSecretKey(k))
			}
			return out
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				out[i] = walk(fmt.Sprintf("%s[%d]", path, i), e, secret)
			}
			return out
		case string:
			if !secret || x == "" {
				return x
			}
			val, err := config.Secret(path, x)
			if err != nil {
				errs = append(errs, err.Error())
				return x
			}
			secrets = append(secrets, val)
			return val
		}
		return v
	}
	out, _ := walk(prefix, cfg, false).(map[string]any)
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, nil, fmt.Errorf("%w: %s", ErrConfig, strings.Join(errs, "; "))
	}
	return out, secrets, nil
}
