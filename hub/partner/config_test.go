package partner_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plantsync/plantsync/hub/partner"
	"github.com/plantsync/plantsync/internal/config"
)

// The sample config decodes strictly and validates, and gets the defaults
// it leaves out.
func TestSampleConfig(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "partners.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Partners []partner.Config `yaml:"partners"`
	}
	if err := config.Decode("partners.example.yaml", raw, &doc); err != nil {
		t.Fatal(err)
	}
	if errs := partner.Validate("partners", doc.Partners, true); len(errs) > 0 {
		t.Fatalf("sample does not validate: %v", errs)
	}
	if len(doc.Partners) != 2 || doc.Partners[1].WithDefaults().MaxBatchEvents != partner.NewDefaultConfig().MaxBatchEvents {
		t.Fatalf("sample: %+v", doc.Partners)
	}
	if errs := partner.Validate("partners", doc.Partners, false); len(errs) != 1 || !strings.Contains(errs[0].Error(), "partners[1].auth.client_cert: the HTTP listener does not ask for client certificates") {
		t.Fatalf("client_cert without http.tls.client_ca: %v", errs)
	}
}

func TestCheckFiles(t *testing.T) {
	hash := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name, token, want string
	}{
		{"token", "pst_0123456789abcdef", ""},
		{"hash", hash, ""},
		{"short", "changeme", "holds a token of 8 bytes; want at least 16"},
		{"bad hash", "sha256:abc", "the rest is not 64 hex digits"},
		{"two words", "pst_0123456789abcdef second", "more than one word"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := partner.Config{Name: "acme", Auth: partner.Auth{TokenFile: writeSecret(t, "token", tc.token)}}
			errs := partner.CheckFiles("partners", []partner.Config{c})
			switch {
			case tc.want == "" && len(errs) > 0:
				t.Fatalf("refused: %v", errs)
			case tc.want != "" && (len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) || !strings.HasPrefix(errs[0].Error(), "partners[0].auth.token_file: ")):
				t.Fatalf("got %v, want partners[0].auth.token_file: ...%s", errs, tc.want)
			case strings.Contains(strings.TrimPrefix(tc.token, "sha256:"), "0123456789") && len(errs) > 0 && strings.Contains(errs[0].Error(), tc.token):
				t.Fatalf("error shows the secret: %v", errs)
			}
		})
	}
}
