package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
)

func TestMain(m *testing.M) {
	// The test binary doubles as the plugin binary of the benchmark.
	if sdktest.RunPluginRole(map[string]func(){"webhook": main}) {
		return
	}
	goleak.VerifyTestMain(m)
}

// target is an HTTP target recording what it receives.
type target struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []*http.Request
	bodies  [][]byte
	respond func(w http.ResponseWriter, r *http.Request, body []byte)
}

func newTarget(t *testing.T, tlsServer bool) *target {
	tg := &target{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		tg.mu.Lock()
		tg.reqs = append(tg.reqs, r)
		tg.bodies = append(tg.bodies, body)
		respond := tg.respond
		tg.mu.Unlock()
		if respond == nil {
			w.WriteHeader(http.StatusOK)
			return
		}
		respond(w, r, body)
	})
	if tlsServer {
		tg.Server = httptest.NewTLSServer(h)
	} else {
		tg.Server = httptest.NewServer(h)
	}
	t.Cleanup(tg.Close)
	return tg
}

func (tg *target) set(fn func(w http.ResponseWriter, r *http.Request, body []byte)) {
	tg.mu.Lock()
	tg.respond = fn
	tg.mu.Unlock()
}

func (tg *target) last() (*http.Request, []byte) {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if len(tg.reqs) == 0 {
		return nil, nil
	}
	return tg.reqs[len(tg.reqs)-1], tg.bodies[len(tg.bodies)-1]
}

// connect configures a connector served through the SDK harness.
func connect(t *testing.T, cfg map[string]any) (sdk.Destination, sdk.ConfigureResponse) {
	t.Helper()
	c := New(nil)
	t.Cleanup(func() {
		if _, client, err := c.current(); err == nil {
			client.CloseIdleConnections()
		}
	})
	d := sdktest.ServeDestination(t, c)
	return d, sdktest.Configure(t, d, "portal", cfg)
}

func deliver(t *testing.T, d sdk.Destination, req sdk.DeliverRequest) sdk.DeliverResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := d.Deliver(ctx, req)
	if err != nil {
		t.Fatalf("deliver: %v", err)
	}
	return res
}

var doc = json.RawMessage(`{"purchase_order":"PUR-9","lines":[{"line":"1","quantity":"99.500"}]}`)

func TestDeliverSignedWithIdempotencyKey(t *testing.T) {
	tg := newTarget(t, false)
	tg.set(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":"PORTAL-77"}`))
	})
	d, info := connect(t, map[string]any{"url": tg.URL + "/hooks/{action}", "actions": []any{"purchase_order.publish"},
		"hmac_secret": "k3y-for-signing", "headers": map[string]any{"X-Tenant": "acme"}})
	if !info.Supports("purchase_order.publish") || info.Has(sdk.CapabilityLookup) || info.Version != Version {
		t.Fatalf("info = %+v", info)
	}
	res := deliver(t, d, sdk.DeliverRequest{IdempotencyKey: "c17a613d727280b5435d0f65828db7b2", Action: "purchase_order.publish",
		OrderingKey: "po:PUR-9", CorrelationID: "corr-1", Attempt: 2, Document: doc})
	if res.Outcome != sdk.OutcomeOK || res.ExternalRef != "PORTAL-77" {
		t.Fatalf("res = %+v", res)
	}
	r, body := tg.last()
	if r.URL.Path != "/hooks/purchase_order.publish" || r.Method != http.MethodPost {
		t.Errorf("request %s %s", r.Method, r.URL.Path)
	}
	for h, want := range map[string]string{
		"Idempotency-Key": "c17a613d727280b5435d0f65828db7b2", "X-Plantsync-Action": "purchase_order.publish",
		"X-Plantsync-Correlation-Id": "corr-1", "X-Plantsync-Attempt": "2", "Content-Type": "application/json",
		"X-Tenant": "acme", "X-Plantsync-Signature": Sign("k3y-for-signing", body),
	} {
		if got := r.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	var env struct {
		IdempotencyKey string          `json:"idempotency_key"`
		Action         string          `json:"action"`
		OrderingKey    string          `json:"ordering_key"`
		CorrelationID  string          `json:"correlation_id"`
		Document       json.RawMessage `json:"document"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatal(err)
	}
	if env.IdempotencyKey != "c17a613d727280b5435d0f65828db7b2" || env.OrderingKey != "po:PUR-9" || string(env.Document) != string(doc) {
		t.Errorf("envelope = %+v", env)
	}
}

func TestSignatureKnownValue(t *testing.T) {
	// echo -n '{"a":1}' | openssl dgst -sha256 -hmac secret
	if got := Sign("secret", []byte(`{"a":1}`)); got != "sha256=aa9e2e3575f5d7098b6caccd790888c36d5fdb63342a73bada2d6a51747a8494" {
		t.Fatalf("sign = %s", got)
	}
}

func TestStatusCodesMapped(t *testing.T) {
	tg := newTarget(t, false)
	d, _ := connect(t, map[string]any{"url": tg.URL, "actions": []any{"supply.update"}, "body": "document"})
	for _, tc := range []struct {
		code      int
		header    string
		body      string
		want      sdk.Outcome
		after     time.Duration
		uncertain bool
		message   string
	}{
		{code: 200, want: sdk.OutcomeOK},
		{code: 202, body: `{"id":42}`, want: sdk.OutcomeOK},
		{code: 204, want: sdk.OutcomeOK},
		{code: 408, want: sdk.OutcomeRetryable, uncertain: true},
		{code: 429, header: "7", want: sdk.OutcomeRetryable, after: 7 * time.Second},
		{code: 500, body: "boom", want: sdk.OutcomeRetryable, uncertain: true, message: "HTTP 500: boom"},
		{code: 503, header: "120", want: sdk.OutcomeRetryable, after: 2 * time.Minute, uncertain: true},
		{code: 400, body: `{"error":"quantity missing"}`, want: sdk.OutcomePermanent, message: `HTTP 400: {"error":"quantity missing"}`},
		{code: 404, want: sdk.OutcomePermanent, message: "HTTP 404"},
		{code: 409, want: sdk.OutcomePermanent},
		{code: 422, want: sdk.OutcomePermanent},
	} {
		tg.set(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
			if tc.header != "" {
				w.Header().Set("Retry-After", tc.header)
			}
			w.WriteHeader(tc.code)
			_, _ = w.Write([]byte(tc.body))
		})
		res := deliver(t, d, sdk.DeliverRequest{IdempotencyKey: "k", Action: "supply.update", Document: doc})
		if res.Outcome != tc.want || res.RetryAfter != tc.after || res.Uncertain != tc.uncertain || !strings.Contains(res.Message, tc.message) {
			t.Errorf("HTTP %d: res = %+v, want %s after %s uncertain %v message %q", tc.code, res, tc.want, tc.after, tc.uncertain, tc.message)
		}
		if tc.code == 202 && res.ExternalRef != "42" {
			t.Errorf("HTTP 202: ref = %q, want 42", res.ExternalRef)
		}
		if _, body := tg.last(); string(body) != string(doc) {
			t.Errorf("body: document mode sent %s", body)
		}
	}
	if got := retryAfter(time.Unix(1_800_000_090, 0).UTC().Format(http.TimeFormat), time.Unix(1_800_000_000, 0)); got != 90*time.Second {
		t.Errorf("Retry-After as a date: %s, want 90s", got)
	}
}

func TestTargetDownAndTimeout(t *testing.T) {
	tg := newTarget(t, false)
	addr := tg.URL
	release := make(chan struct{})
	tg.set(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	d, _ := connect(t, map[string]any{"url": addr, "actions": []any{"supply.update"}, "timeout": "200ms"})
	// Sent, then no answer in time: the target may have acted.
	res := deliver(t, d, sdk.DeliverRequest{IdempotencyKey: "k", Action: "supply.update", Document: doc})
	close(release)
	if res.Outcome != sdk.OutcomeRetryable || !res.Uncertain {
		t.Errorf("timeout: res = %+v, want retryable and uncertain", res)
	}
	tg.Close()
	// Nothing listens: the request never left, so the outcome is certain.
	res = deliver(t, d, sdk.DeliverRequest{IdempotencyKey: "k", Action: "supply.update", Document: doc})
	if res.Outcome != sdk.OutcomeRetryable || res.Uncertain {
		t.Errorf("target down: res = %+v, want retryable and certain", res)
	}
}

func TestUnsupportedActionAndBadDocument(t *testing.T) {
	tg := newTarget(t, false)
	d, _ := connect(t, map[string]any{"url": tg.URL, "actions": []any{"supply.update"}})
	if res := deliver(t, d, sdk.DeliverRequest{IdempotencyKey: "k", Action: "inventory.block", Document: doc}); res.Outcome != sdk.OutcomePermanent ||
		!strings.Contains(res.Message, `unsupported action "inventory.block"`) {
		t.Errorf("res = %+v", res)
	}
	if res := deliver(t, d, sdk.DeliverRequest{IdempotencyKey: "k", Action: "supply.update", Document: json.RawMessage(`{`)}); res.Outcome != sdk.OutcomePermanent {
		t.Errorf("bad document: res = %+v", res)
	}
	if r, _ := tg.last(); r != nil {
		t.Errorf("a refused delivery reached the target: %s", r.URL)
	}
}

func TestLookup(t *testing.T) {
	tg := newTarget(t, false)
	tg.set(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		switch r.URL.Path {
		case "/docs/known":
			_, _ = w.Write([]byte(`{"id":"SBX-1"}`))
		case "/docs/broken":
			w.WriteHeader(http.StatusBadGateway)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	d, info := connect(t, map[string]any{"url": tg.URL, "lookup_url": tg.URL + "/docs/{key}", "actions": []any{"a.b"}})
	if !info.Has(sdk.CapabilityLookup) {
		t.Fatalf("info = %+v", info)
	}
	ctx := context.Background()
	for key, want := range map[string]sdk.LookupStatus{"known": sdk.LookupFound, "other": sdk.LookupNotFound, "broken": sdk.LookupUnknown} {
		res, err := d.Lookup(ctx, sdk.LookupRequest{IdempotencyKey: key, Action: "a.b"})
		if err != nil || res.Status != want {
			t.Errorf("lookup %s = %+v, %v; want %s", key, res, err, want)
		}
		if key == "known" && res.ExternalRef != "SBX-1" {
			t.Errorf("ref = %q", res.ExternalRef)
		}
	}
	d2, info2 := connect(t, map[string]any{"url": tg.URL, "actions": []any{"a.b"}})
	res, err := d2.Lookup(ctx, sdk.LookupRequest{IdempotencyKey: "known"})
	if err != nil || res.Status != sdk.LookupUnknown || !strings.Contains(res.Message, "Idempotency-Key") || info2.Has(sdk.CapabilityLookup) {
		t.Errorf("without lookup_url: %+v, %v", res, err)
	}
}

func TestTLSWithCAFile(t *testing.T) {
	tg := newTarget(t, true)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tg.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	d, _ := connect(t, map[string]any{"url": tg.URL, "actions": []any{"a.b"}, "tls": map[string]any{"ca_file": ca}})
	if res := deliver(t, d, sdk.DeliverRequest{IdempotencyKey: "k", Action: "a.b", Document: doc}); res.Outcome != sdk.OutcomeOK {
		t.Errorf("with the CA: %+v", res)
	}
	d2, _ := connect(t, map[string]any{"url": tg.URL, "actions": []any{"a.b"}})
	if res := deliver(t, d2, sdk.DeliverRequest{IdempotencyKey: "k", Action: "a.b", Document: doc}); res.Outcome != sdk.OutcomeRetryable ||
		!strings.Contains(res.Message, "certificate") {
		t.Errorf("unknown CA: %+v", res)
	}
}

func TestInvalidConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"actions": []any{"a"}}, "url: required"},
		{map[string]any{"url": "ftp://x", "actions": []any{"a"}}, `url: "ftp://x" is not an http(s) URL`},
		{map[string]any{"url": "http://x"}, "actions: list the actions"},
		{map[string]any{"url": "http://x", "actions": []any{"a"}, "lookup_url": "http://x/docs"}, "lookup_url: \"http://x/docs\" has no {key}"},
		{map[string]any{"url": "http://x", "actions": []any{"a"}, "timeout": "soon"}, `"soon" is not a duration`},
		{map[string]any{"url": "http://x", "actions": []any{"a"}, "body": "xml"}, `body: "xml"; want envelope or document`},
		{map[string]any{"url": "http://x", "actions": []any{"a"}, "tls": map[string]any{"cert_file": "c"}}, "tls: set both cert_file and key_file"},
		{map[string]any{"url": "http://x", "actions": []any{"a"}, "tls": map[string]any{"ca_file": "/nonexistent"}}, "tls.ca_file"},
		{map[string]any{"url": "http://x", "actions": []any{"a"}, "retries": 3}, `unknown field "retries"`},
	} {
		d := sdktest.ServeDestination(t, New(nil))
		_, err := d.Configure(context.Background(), sdk.ConfigureRequest{Name: "x", Config: tc.cfg})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %v: err = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
