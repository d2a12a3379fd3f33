package sdk_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
)

func TestScrubberForms(t *testing.T) {
	const secret = `pa$$ "word"/1`
	s := sdk.NewScrubber(secret, "abc") // too short to scrub
	q, _ := json.Marshal(secret)
	for _, form := range []string{secret, string(q[1 : len(q)-1]), url.QueryEscape(secret), base64.StdEncoding.EncodeToString([]byte(secret))} {
		if got := s.Scrub("x " + form + " y"); got != "x "+sdk.Redacted+" y" {
			t.Errorf("form %q: %q", form, got)
		}
	}
	if got := s.Scrub("abc"); got != "abc" {
		t.Errorf("short value scrubbed: %q", got)
	}
	var nilScrubber *sdk.Scrubber
	if nilScrubber.Scrub("x") != "x" {
		t.Error("nil scrubber")
	}
}

func TestResolveSecrets(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("from-file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SDK_TEST_TOKEN", "from-env-token")
	cfg := map[string]any{
		"url": "http://x", "password": "file:" + file, "password_file": "/not/a/secret",
		"headers":     map[string]any{"Authorization": "env:SDK_TEST_TOKEN", "X-Tenant": "acme"},
		"hmac_secret": "", "list": []any{map[string]any{"api_key": "env:SDK_TEST_TOKEN"}},
	}
	out, secrets, err := sdk.ResolveSecrets("config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if out["password"] != "from-file-secret" || out["password_file"] != "/not/a/secret" || out["headers"].(map[string]any)["Authorization"] != "from-env-token" ||
		out["headers"].(map[string]any)["X-Tenant"] != "acme" || out["list"].([]any)[0].(map[string]any)["api_key"] != "from-env-token" {
		t.Errorf("resolved = %v", out)
	}
	if cfg["password"] != "file:"+file {
		t.Error("the input was modified")
	}
	if strings.Join(secrets, ",") == "" || len(secrets) != 3 {
		t.Errorf("secrets = %v", secrets)
	}
	_, _, err = sdk.ResolveSecrets("config", map[string]any{"token": "inline-value", "nested": map[string]any{"secret": "env:SDK_TEST_UNSET_VAR"}})
	if !errors.Is(err, sdk.ErrConfig) || !strings.Contains(err.Error(), "config.token: give the secret as file:") ||
		!strings.Contains(err.Error(), "config.nested.secret: environment variable SDK_TEST_UNSET_VAR is not set") || strings.Contains(err.Error(), "inline-value") {
		t.Errorf("err = %v", err)
	}
}

func TestDurationAndDecode(t *testing.T) {
	var cfg struct {
		A sdk.Duration `json:"a"`
		B sdk.Duration `json:"b"`
	}
	req := sdk.ConfigureRequest{Config: map[string]any{"a": "1m30s", "b": 2.5}}
	if err := req.Decode(&cfg); err != nil || cfg.A.D() != 90*time.Second || cfg.B.D() != 2500*time.Millisecond {
		t.Fatalf("%+v %v", cfg, err)
	}
	req = sdk.ConfigureRequest{Config: map[string]any{"a": "soon"}}
	if err := req.Decode(&cfg); err == nil || !strings.Contains(err.Error(), `"soon" is not a duration`) {
		t.Errorf("err = %v", err)
	}
}
