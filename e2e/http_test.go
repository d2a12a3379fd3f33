package e2e

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/plantsync/plantsync/internal/testkit"
)

func getJSON[T any](t *testing.T, url string) T {
	t.Helper()
	var v T
	// The hub's /api/v1 wants a bearer token; /healthz and the agent's
	// loopback admin API ignore it.
	resp, err := testkit.TokenClient(testkit.ViewerToken).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return v
}
