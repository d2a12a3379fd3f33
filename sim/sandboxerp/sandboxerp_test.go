package sandboxerp

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, dir, secret string) *Server {
	t.Helper()
	s, err := New(Config{Listen: "127.0.0.1:0", Dir: dir, HMACSecret: secret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s
}

func post(t *testing.T, s *Server, key, secret string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/webhook", bytes.NewReader(body))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if secret != "" {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write(body)
		req.Header.Set("X-Plantsync-Signature", "sha256="+hex.EncodeToString(m.Sum(nil)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func get(t *testing.T, url string, out any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func envelope(key string) []byte {
	b, _ := json.Marshal(map[string]any{"idempotency_key": key, "action": "purchase_requisition.create",
		"correlation_id": "corr-" + key, "document": map[string]string{"item": "200201", "quantity": "8.147"}})
	return b
}

// One document per idempotency key, kept across a restart; signatures
// checked; lookup by key; fault injection.
func TestOneDocumentPerKeyDurably(t *testing.T) {
	dir := t.TempDir()
	const secret = "sandbox-secret"
	s := start(t, dir, secret)
	if code, out := post(t, s, "k1", secret, envelope("k1")); code != http.StatusCreated || out["id"] != "SBX-000001" {
		t.Fatalf("first POST: %d %v", code, out)
	}
	if code, out := post(t, s, "k1", secret, envelope("k1")); code != http.StatusOK || out["id"] != "SBX-000001" || out["created"] != false {
		t.Fatalf("repeated POST: %d %v", code, out)
	}
	if code, _ := post(t, s, "k2", "wrong-secret", envelope("k2")); code != http.StatusUnauthorized {
		t.Errorf("bad signature: %d", code)
	}
	if code, _ := post(t, s, "", secret, envelope("k2")); code != http.StatusBadRequest {
		t.Errorf("no key: %d", code)
	}
	if code, _ := post(t, s, "k3", secret, envelope("other")); code != http.StatusBadRequest {
		t.Errorf("key mismatch: %d", code)
	}
	s.FailNext(1, http.StatusServiceUnavailable)
	if code, _ := post(t, s, "k2", secret, envelope("k2")); code != http.StatusServiceUnavailable {
		t.Errorf("fail-next: %d", code)
	}
	if code, out := post(t, s, "k2", secret, envelope("k2")); code != http.StatusCreated || out["id"] != "SBX-000002" {
		t.Fatalf("after the failure: %d %v", code, out)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	s = start(t, dir, secret)
	var list struct {
		Documents []Document `json:"documents"`
		Count     int        `json:"count"`
	}
	if code := get(t, s.URL()+"/documents", &list); code != http.StatusOK || list.Count != 2 {
		t.Fatalf("list: %d %+v", code, list)
	}
	if d := list.Documents[0]; d.ID != "SBX-000001" || d.IdempotencyKey != "k1" || d.Deliveries != 2 || d.CorrelationID != "corr-k1" ||
		d.Action != "purchase_requisition.create" || string(d.Document) != `{"item":"200201","quantity":"8.147"}` {
		t.Errorf("document = %+v", d)
	}
	var d Document
	if code := get(t, s.URL()+"/documents/by-key/k2", &d); code != http.StatusOK || d.ID != "SBX-000002" {
		t.Errorf("by key: %d %+v", code, d)
	}
	if code := get(t, s.URL()+"/documents/by-key/nope", nil); code != http.StatusNotFound {
		t.Errorf("unknown key: %d", code)
	}
	if code := get(t, s.URL()+"/documents/SBX-000001", &d); code != http.StatusOK || d.IdempotencyKey != "k1" {
		t.Errorf("by id: %d %+v", code, d)
	}
	if code := get(t, s.URL()+"/documents?since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339), &list); code != http.StatusOK || list.Count != 0 {
		t.Errorf("since: %d %+v", code, list)
	}
	if code := get(t, s.URL()+"/documents?since=yesterday", nil); code != http.StatusBadRequest {
		t.Errorf("bad since: %d", code)
	}
}
