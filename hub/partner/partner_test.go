package partner_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/partner"
	"github.com/plantsync/plantsync/hub/schema"
	"github.com/plantsync/plantsync/internal/testclock"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Test-only secrets.
const (
	acmeToken  = "pst_partner_acme_test_token_0001"
	acmeSecret = "hmac-secret-for-tests-only-0001"
	wmsToken   = "pst_partner_wms_test_token_00001"
)

type env struct {
	t       *testing.T
	srv     *httptest.Server
	journal *journal.Bolt
	reg     *prometheus.Registry
	clock   *testclock.Clock
}

func writeSecret(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// acme sends supplier confirmations for DE-01 with a bearer token.
func acme(t *testing.T) partner.Config {
	return partner.Config{
		Name: "acme", Types: []string{"supplier.confirmation"}, Plants: []string{"DE-01"},
		Auth: partner.Auth{TokenFile: writeSecret(t, "acme.token", acmeToken)},
	}
}

// start serves the partner handler on 127.0.0.1:0 over a real journal. A
// nil tlsCfg serves plain HTTP.
func start(t *testing.T, tlsCfg *tls.Config, cfgs ...partner.Config) *env {
	t.Helper()
	if errs := partner.Validate("partners", cfgs, tlsCfg != nil); len(errs) > 0 {
		t.Fatalf("configs do not validate: %v", errs)
	}
	j, err := journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(t.TempDir(), "journal.db")})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, journal: j, reg: prometheus.NewRegistry(), clock: testclock.New(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))}
	h, err := partner.New(partner.Options{Partners: cfgs, Journal: j, Schemas: schema.New(), Registerer: e.reg, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(partner.Route, h)
	e.srv = httptest.NewUnstartedServer(mux)
	if tlsCfg != nil {
		e.srv.TLS = tlsCfg
		e.srv.StartTLS()
	} else {
		e.srv.Start()
	}
	t.Cleanup(func() {
		e.srv.Close()
		if err := j.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

type reply struct {
	code   int
	header http.Header
	body   []byte
}

func (r reply) answer(t *testing.T) partner.Answer {
	t.Helper()
	var a partner.Answer
	if err := json.Unmarshal(r.body, &a); err != nil {
		t.Fatalf("answer %d is not JSON: %v\n%s", r.code, err, r.body)
	}
	return a
}

func (r reply) refusal(t *testing.T) partner.Refusal {
	t.Helper()
	var a partner.Refusal
	if err := json.Unmarshal(r.body, &a); err != nil || a.Error == "" {
		t.Fatalf("refusal %d is not {\"error\": ...}: %v\n%s", r.code, err, r.body)
	}
	return a
}

// post sends body to /api/v1/ingest/{name}; headers are name, value pairs.
func (e *env) post(client *http.Client, name string, body []byte, headers ...string) reply {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/ingest/"+name, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if client == nil {
		client = e.srv.Client()
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, raw}
}

func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

func sign(secret string, body []byte) []string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return []string{partner.SignatureHeader, "sha256=" + hex.EncodeToString(mac.Sum(nil))}
}

func (e *env) events() []*pb.Event {
	e.t.Helper()
	recs, err := e.journal.Read(0, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]*pb.Event, len(recs))
	for i, r := range recs {
		out[i] = &pb.Event{}
		if err := proto.Unmarshal(r.Event, out[i]); err != nil {
			e.t.Fatal(err)
		}
		if r.Producer != "partner:acme" && r.Producer != "partner:wms" {
			e.t.Fatalf("record %d has producer %q", r.Position, r.Producer)
		}
	}
	return out
}

// counter reads one sample of the registry by name and labels.
func (e *env) counter(name string, labels map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func confirmation(id string) []byte {
	return []byte(fmt.Sprintf(`{"id": %q, "type": "supplier.confirmation", "plant": "DE-01", "occurred_at": "2026-11-27T10:00:00Z",
  "supplier_confirmation": {"purchase_order": "PO-4711", "lines": [{"line": "1", "quantity": {"value": "100", "unit": "KG"}, "promised_date": "2026-12-02T06:00:00Z"}]}}`, id))
}

func TestAuthentication(t *testing.T) {
	c := acme(t)
	c.Auth.HMACSecretFile = writeSecret(t, "acme.hmac", acmeSecret)
	wms := partner.Config{Name: "wms", Types: []string{"goods.receipt"}, Plants: []string{"*"},
		Auth: partner.Auth{TokenFile: writeSecret(t, "wms.token", wmsToken)}}
	e := start(t, nil, c, wms)
	body := confirmation("CONF-1")
	good := append(bearer(acmeToken), sign(acmeSecret, body)...)

	for _, tc := range []struct {
		name, partner string
		headers       []string
		reason        string // label of plantsync_hub_partner_auth_failures_total
		want          string // in the error
	}{
		{"no token", "acme", sign(acmeSecret, body), "missing_credentials", "missing bearer token"},
		{"not a bearer token", "acme", append([]string{"Authorization", "Basic " + acmeToken}, sign(acmeSecret, body)...), "missing_credentials", "missing bearer token"},
		{"wrong token", "acme", append(bearer(acmeToken+"x"), sign(acmeSecret, body)...), "token", "credentials not accepted"},
		{"another partner's token", "acme", append(bearer(wmsToken), sign(acmeSecret, body)...), "token", "credentials not accepted"},
		{"no signature", "acme", bearer(acmeToken), "missing_credentials", "missing X-Plantsync-Signature"},
		{"signature of another body", "acme", append(bearer(acmeToken), sign(acmeSecret, confirmation("CONF-2"))...), "signature", "signature does not match"},
		{"signature with another secret", "acme", append(bearer(acmeToken), sign("another-secret-of-16-bytes", body)...), "signature", "signature does not match"},
		{"signature not hex", "acme", append(bearer(acmeToken), partner.SignatureHeader, "sha256=zz"), "signature", "not sha256=<hex>"},
		{"unknown partner", "nobody", good, "unknown_partner", "credentials not accepted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			label := tc.partner
			if tc.partner == "nobody" {
				label = "_unknown"
			}
			before := e.counter("plantsync_hub_partner_auth_failures_total", map[string]string{"partner": label, "reason": tc.reason})
			r := e.post(nil, tc.partner, body, tc.headers...)
			if r.code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", r.code, r.body)
			}
			if !strings.Contains(r.refusal(t).Error, tc.want) {
				t.Errorf("error %q lacks %q", r.refusal(t).Error, tc.want)
			}
			if r.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if got := e.counter("plantsync_hub_partner_auth_failures_total", map[string]string{"partner": label, "reason": tc.reason}); got != before+1 {
				t.Errorf("auth failures{partner=%s,reason=%s} = %g, want %g", label, tc.reason, got, before+1)
			}
		})
	}
	if n := len(e.events()); n != 0 {
		t.Fatalf("refused requests journaled %d events", n)
	}
	r := e.post(nil, "acme", body, good...)
	if r.code != http.StatusOK {
		t.Fatalf("good credentials: %d %s", r.code, r.body)
	}
	if n := len(e.events()); n != 1 {
		t.Fatalf("journal holds %d events, want 1", n)
	}
}

func TestForbiddenTypeOrPlant(t *testing.T) {
	e := start(t, nil, acme(t))
	receipt := []byte(`{"id": "GR-1", "type": "goods.receipt", "plant": "DE-01", "occurred_at": "2026-11-27T10:00:00Z",
  "goods_receipt": {"purchase_order": "PO-1", "item": "C-1", "quantity": {"value": "1", "unit": "EA"}}}`)
	otherPlant := bytes.Replace(confirmation("CONF-9"), []byte(`"DE-01"`), []byte(`"US-07"`), 1)
	for _, tc := range []struct {
		name  string
		body  []byte
		field string
		want  string
	}{
		{"type", receipt, "type", `partner "acme" may not send "goods.receipt"; it may send supplier.confirmation`},
		{"plant", otherPlant, "plant", `partner "acme" may not send for plant "US-07"; it may send for DE-01`},
		{"plant in a batch with allowed events", []byte(`{"events": [` + string(confirmation("CONF-10")) + `,` + string(otherPlant) + `]}`), "plant", `plant "US-07"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.counter("plantsync_hub_partner_forbidden_events_total", map[string]string{"partner": "acme", "field": tc.field})
			r := e.post(nil, "acme", tc.body, bearer(acmeToken)...)
			if r.code != http.StatusForbidden {
				t.Fatalf("status %d, want 403: %s", r.code, r.body)
			}
			ref := r.refusal(t)
			if len(ref.Results) != 1 || ref.Results[0].Status != partner.StatusForbidden || len(ref.Results[0].Errors) != 1 ||
				ref.Results[0].Errors[0].Field != tc.field || !strings.Contains(ref.Results[0].Errors[0].Reason, tc.want) {
				t.Fatalf("refusal does not name %s with %q:\n%s", tc.field, tc.want, r.body)
			}
			if got := e.counter("plantsync_hub_partner_forbidden_events_total", map[string]string{"partner": "acme", "field": tc.field}); got != before+1 {
				t.Errorf("forbidden{field=%s} = %g, want %g", tc.field, got, before+1)
			}
		})
	}
	if n := len(e.events()); n != 0 {
		t.Fatalf("forbidden requests journaled %d events (a 403 journals nothing of its request)", n)
	}
}

// Every rejected event names the field at fault, as posted.
func TestSchemaErrorsNameTheField(t *testing.T) {
	e := start(t, nil, acme(t))
	base := `"type": "supplier.confirmation", "plant": "DE-01", "occurred_at": "2026-11-27T10:00:00Z"`
	line := `{"line": "1", "quantity": {"value": "100", "unit": "KG"}}`
	for _, tc := range []struct {
		name, body, field, reason string
	}{
		{"missing purchase order", `{"id": "A", ` + base + `, "supplier_confirmation": {"lines": [` + line + `]}}`,
			"supplier_confirmation.purchase_order", "missing"},
		{"no lines", `{"id": "A", ` + base + `, "supplier_confirmation": {"purchase_order": "PO-1"}}`,
			"supplier_confirmation.lines", "want at least 1"},
		{"decimal with a comma", `{"id": "A", ` + base + `, "supplier_confirmation": {"purchase_order": "PO-1", "lines": [{"line": "1", "quantity": {"value": "12,5", "unit": "KG"}}]}}`,
			"supplier_confirmation.lines[0].quantity.value", `"12,5" is not a decimal string`},
		{"decimal as a JSON number", `{"id": "A", ` + base + `, "supplier_confirmation": {"purchase_order": "PO-1", "lines": [{"line": "1", "quantity": {"value": 12.5, "unit": "KG"}}]}}`,
			"supplier_confirmation.lines[0].quantity.value", "invalid value for string field value: 12.5"},
		{"unknown nested field", `{"id": "A", ` + base + `, "supplier_confirmation": {"purchase_order": "PO-1", "lines": [` + line + `, {"line": "2", "qty": 4}]}}`,
			"supplier_confirmation.lines[1].qty", `unknown field "qty"`},
		{"unknown top-level field", `{"id": "A", ` + base + `, "confirmation": {}}`,
			"confirmation", `unknown field "confirmation"`},
		{"bad timestamp", `{"id": "A", "type": "supplier.confirmation", "plant": "DE-01", "occurred_at": "yesterday", "supplier_confirmation": {"purchase_order": "PO-1", "lines": [` + line + `]}}`,
			"occurred_at", "invalid google.protobuf.Timestamp"},
		{"missing occurred_at", `{"id": "A", "type": "supplier.confirmation", "plant": "DE-01", "supplier_confirmation": {"purchase_order": "PO-1", "lines": [` + line + `]}}`,
			"occurred_at", "missing"},
		{"missing plant", `{"id": "A", "type": "supplier.confirmation", "occurred_at": "2026-11-27T10:00:00Z", "supplier_confirmation": {"purchase_order": "PO-1", "lines": [` + line + `]}}`,
			"plant", "missing"},
		{"payload of another type", `{"id": "A", ` + base + `, "goods_receipt": {"purchase_order": "PO-1"}}`,
			"supplier_confirmation", "missing; a supplier.confirmation event carries its data in supplier_confirmation"},
		{"two payloads", `{"id": "A", ` + base + `, "supplier_confirmation": {}, "goods_receipt": {}}`,
			"goods_receipt", "already set"},
		{"missing id", `{` + base + `, "supplier_confirmation": {"purchase_order": "PO-1", "lines": [` + line + `]}}`,
			"id", "missing; want your own id"},
		{"missing type", `{"id": "A", "plant": "DE-01", "occurred_at": "2026-11-27T10:00:00Z"}`,
			"type", "missing"},
		{"sequence is the hub's", `{"id": "A", "sequence": "7", ` + base + `, "supplier_confirmation": {"purchase_order": "PO-1", "lines": [` + line + `]}}`,
			"sequence", "set by the hub"},
		{"source is the hub's", `{"id": "A", "source": {"kind": "erp"}, ` + base + `, "supplier_confirmation": {"purchase_order": "PO-1", "lines": [` + line + `]}}`,
			"source", "set by the hub"},
		{"schema version from the future", `{"id": "A", "schema_version": 9, ` + base + `, "supplier_confirmation": {"purchase_order": "PO-1", "lines": [` + line + `]}}`,
			"schema_version", "this hub knows up to 1"},
		{"not an object", `[17]`, "", "not a JSON object"},
		{"id of the wrong type", `{"id": 17, ` + base + `}`, "id", "invalid value for string field id"},
		{"attribute of the wrong type", `{"id": "A", "attributes": {"n": 1}, ` + base + `}`, "attributes.n", "invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(nil, "acme", []byte(tc.body), bearer(acmeToken)...)
			if r.code != http.StatusUnprocessableEntity {
				t.Fatalf("status %d, want 422: %s", r.code, r.body)
			}
			a := r.answer(t)
			if a.Rejected != 1 || len(a.Results) != 1 || a.Results[0].Status != partner.StatusRejected {
				t.Fatalf("answer is not one rejected event:\n%s", r.body)
			}
			for _, fe := range a.Results[0].Errors {
				if fe.Field == tc.field && strings.Contains(fe.Reason, tc.reason) {
					return
				}
			}
			t.Fatalf("no error names field %q with %q:\n%s", tc.field, tc.reason, r.body)
		})
	}
	if n := len(e.events()); n != 0 {
		t.Fatalf("rejected events journaled: %d", n)
	}
}

func TestBadRequests(t *testing.T) {
	c := acme(t)
	c.MaxBatchEvents = 2
	e := start(t, nil, c)
	for _, tc := range []struct {
		name string
		body string
		ct   string
		code int
		want string
	}{
		{"empty", "", "", http.StatusBadRequest, "empty"},
		{"syntax", `{"id": "A",,}`, "", http.StatusBadRequest, "invalid JSON at byte offset 12"},
		{"trailing garbage", `{"id": "A"} x`, "", http.StatusBadRequest, "invalid JSON"},
		{"a string", `"event"`, "", http.StatusBadRequest, "want one event as a JSON object"},
		{"empty batch", `{"events": []}`, "", http.StatusBadRequest, "holds no events"},
		{"events not a list", `{"events": {}}`, "", http.StatusBadRequest, "want a JSON array"},
		{"batch with other keys", `{"events": [{}], "partner": "x"}`, "", http.StatusBadRequest, `found also "partner"`},
		{"too many", `[{}, {}, {}]`, "", http.StatusRequestEntityTooLarge, "exceeds max_batch_events 2"},
		{"too large", `{"id": "` + strings.Repeat("x", 2*64<<10+1) + `"}`, "", http.StatusRequestEntityTooLarge, "request body over"},
		{"not JSON", `id=A`, "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType, "want application/json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := bearer(acmeToken)
			if tc.ct != "" {
				h = append(h, "Content-Type", tc.ct)
			}
			r := e.post(nil, "acme", []byte(tc.body), h...)
			if r.code != tc.code || !strings.Contains(r.refusal(t).Error, tc.want) {
				t.Fatalf("got %d %s; want %d with %q", r.code, r.body, tc.code, tc.want)
			}
		})
	}
}

// The same partner id twice is journaled once; the repost is answered as
// a duplicate with the first copy's position.
func TestIdempotentRepost(t *testing.T) {
	e := start(t, nil, acme(t))
	batch, err := os.ReadFile(filepath.Join("testdata", "batch.json"))
	if err != nil {
		t.Fatal(err)
	}
	first := e.post(nil, "acme", batch, bearer(acmeToken)...)
	if first.code != http.StatusUnprocessableEntity { // the second event has "12,5"
		t.Fatalf("first post: %d %s", first.code, first.body)
	}
	a := first.answer(t)
	if a.Accepted != 1 || a.Rejected != 1 || a.Results[0].Status != partner.StatusAccepted || a.Results[0].Position == 0 ||
		a.Results[0].ID != "CONF-4712-1" || a.Results[0].EventID != partner.EventID("acme", "CONF-4712-1") ||
		a.Results[1].Status != partner.StatusRejected || a.Results[1].Errors[0].Field != "supplier_confirmation.lines[0].quantity.value" {
		t.Fatalf("first answer:\n%s", first.body)
	}
	again := e.post(nil, "acme", batch, bearer(acmeToken)...).answer(t)
	if again.Duplicates != 1 || again.Accepted != 0 || again.Results[0].Status != partner.StatusDuplicate ||
		again.Results[0].Position != a.Results[0].Position || again.Results[0].EventID != a.Results[0].EventID {
		t.Fatalf("repost is not answered as a duplicate of position %d: %+v", a.Results[0].Position, again)
	}
	// The fixed event is accepted; the same id twice in one request is
	// journaled once.
	fixed := bytes.Replace(batch, []byte(`"12,5"`), []byte(`"12.5"`), 1)
	twice := []byte(`[` + string(confirmation("CONF-5")) + `,` + string(confirmation("CONF-5")) + `]`)
	if r := e.post(nil, "acme", fixed, bearer(acmeToken)...).answer(t); r.Accepted != 1 || r.Duplicates != 1 {
		t.Fatalf("fixed batch: %+v", r)
	}
	if r := e.post(nil, "acme", twice, bearer(acmeToken)...).answer(t); r.Accepted != 1 || r.Duplicates != 1 || r.Results[1].Position != r.Results[0].Position {
		t.Fatalf("same id twice in one request: %+v", r)
	}
	evs := e.events()
	if len(evs) != 3 {
		t.Fatalf("journal holds %d events, want 3", len(evs))
	}
	if got := e.counter("plantsync_hub_partner_events_total", map[string]string{"partner": "acme", "result": "duplicate"}); got != 3 {
		t.Errorf("duplicates counted %g, want 3", got)
	}
}

// What the journal holds: the derived id, the partner's id as an
// attribute, source and observed_at set by the hub, the rest as posted.
func TestJournaledEvent(t *testing.T) {
	e := start(t, nil, acme(t))
	body, err := os.ReadFile(filepath.Join("testdata", "confirmation.json"))
	if err != nil {
		t.Fatal(err)
	}
	r := e.post(nil, "acme", body, bearer(acmeToken)...)
	if r.code != http.StatusOK {
		t.Fatalf("%d %s", r.code, r.body)
	}
	a := r.answer(t)
	evs := e.events()
	if len(evs) != 1 || a.Results[0].Position != 1 {
		t.Fatalf("journal holds %d events; answer %+v", len(evs), a)
	}
	ev := evs[0]
	want := partner.EventID("acme", "CONF-4711-2")
	if ev.GetId() != want || ev.GetAttributes()[partner.AttrPartnerID] != "CONF-4711-2" || ev.GetAttributes()["portal_user"] != "j.doe" ||
		ev.GetSource().GetKind() != "partner" || ev.GetSource().GetName() != "acme" || !ev.GetObservedAt().AsTime().Equal(e.clock.Now()) ||
		ev.GetCorrelationId() != "PO-4711" || ev.GetSupplierConfirmation().GetLines()[0].GetQuantity().GetValue() != "100" {
		t.Fatalf("journaled event: %v", ev)
	}
	if _, err := schema.New().Validate(ev); err != nil {
		t.Fatalf("journaled event does not validate: %v", err)
	}
	if partner.EventID("acme", "CONF-4711-2") != want || partner.EventID("other", "CONF-4711-2") == want {
		t.Fatal("EventID is not a function of (partner, id)")
	}
}

func TestRateLimit(t *testing.T) {
	c := acme(t)
	c.RateLimit = partner.RateLimit{RequestsPerSecond: 0.5, Burst: 2}
	e := start(t, nil, c)
	for i := range 2 {
		if r := e.post(nil, "acme", confirmation(fmt.Sprint("R-", i)), bearer(acmeToken)...); r.code != http.StatusOK {
			t.Fatalf("request %d within the burst: %d %s", i, r.code, r.body)
		}
	}
	r := e.post(nil, "acme", confirmation("R-2"), bearer(acmeToken)...)
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") != "2" || !strings.Contains(r.refusal(t).Error, "rate limit") {
		t.Fatalf("third request: %d Retry-After %q %s; want 429 with Retry-After 2", r.code, r.header.Get("Retry-After"), r.body)
	}
	// Unauthenticated requests do not spend the partner's budget, nor are
	// they rate limited in its place.
	if r := e.post(nil, "acme", confirmation("R-2"), bearer("wrong-token-wrong-token")...); r.code != http.StatusUnauthorized {
		t.Fatalf("wrong token while limited: %d", r.code)
	}
	e.clock.Add(1500 * time.Millisecond)
	if r := e.post(nil, "acme", confirmation("R-2"), bearer(acmeToken)...); r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
		t.Fatalf("after 1.5 s: %d Retry-After %q", r.code, r.header.Get("Retry-After"))
	}
	e.clock.Add(2 * time.Second)
	if r := e.post(nil, "acme", confirmation("R-2"), bearer(acmeToken)...); r.code != http.StatusOK {
		t.Fatalf("after Retry-After: %d %s", r.code, r.body)
	}
	if got := e.counter("plantsync_hub_partner_rate_limited_total", map[string]string{"partner": "acme"}); got != 2 {
		t.Errorf("rate limited counted %g, want 2", got)
	}
	if got := e.counter("plantsync_hub_partner_requests_total", map[string]string{"partner": "acme", "code": "429"}); got != 2 {
		t.Errorf("requests{code=429} = %g, want 2", got)
	}
}

// failingJournal refuses every commit, as a journal with a full disk does.
type failingJournal struct{ journal.Journal }

func (failingJournal) Commit(context.Context, *journal.Batch) (journal.Outcome, error) {
	return journal.Outcome{}, fmt.Errorf("journal commit: %w", os.ErrPermission)
}

// An event is never reported accepted unless the journal committed it.
func TestJournalFailureIsNotAccepted(t *testing.T) {
	c := acme(t)
	h, err := partner.New(partner.Options{Partners: []partner.Config{c}, Journal: failingJournal{}, Schemas: schema.New()})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/api/v1/ingest/acme", bytes.NewReader(confirmation("F-1")))
	req.SetPathValue("partner", "acme")
	req.Header.Set("Authorization", "Bearer "+acmeToken)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" ||
		!strings.Contains(rec.Body.String(), "resend the request") || strings.Contains(rec.Body.String(), "accepted\"") {
		t.Fatalf("got %d %s; want 503 with Retry-After and no accepted result", rec.Code, rec.Body)
	}
}

// pkiFiles is a CA for partners with a server and two client certificates.
type pkiFiles struct {
	caFile       string
	wms, intrude tls.Certificate
}

func newPartnerPKI(t *testing.T) pkiFiles {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "partners test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	client := func(serial int64, cn string, dns ...string) tls.Certificate {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	caFile := filepath.Join(t.TempDir(), "partners-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return pkiFiles{caFile: caFile, wms: client(2, "wms-client", "wms.plant.example"), intrude: client(3, "someone-else")}
}

func TestClientCertificate(t *testing.T) {
	pk := newPartnerPKI(t)
	tlsCfg, err := partner.ServerTLS(pk.caFile)
	if err != nil {
		t.Fatal(err)
	}
	wms := partner.Config{Name: "wms", Types: []string{"goods.receipt"}, Plants: []string{"*"},
		Auth: partner.Auth{ClientCert: "wms.plant.example"}}
	e := start(t, tlsCfg, wms)
	clientWith := func(certs ...tls.Certificate) *http.Client {
		tr := e.srv.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = certs
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		t.Cleanup(tr.CloseIdleConnections)
		return c
	}
	receipt := []byte(`{"id": "GR-1", "type": "goods.receipt", "plant": "US-07", "occurred_at": "2026-11-27T10:00:00Z",
  "goods_receipt": {"purchase_order": "PO-1", "item": "C-1", "quantity": {"value": "1", "unit": "EA"}}}`)
	if r := e.post(clientWith(), "wms", receipt); r.code != http.StatusUnauthorized || !strings.Contains(r.refusal(t).Error, "missing client certificate") {
		t.Fatalf("without a certificate: %d %s", r.code, r.body)
	}
	if r := e.post(clientWith(pk.intrude), "wms", receipt); r.code != http.StatusUnauthorized {
		t.Fatalf("certificate of another name: %d %s", r.code, r.body)
	}
	if r := e.post(clientWith(pk.wms), "wms", receipt); r.code != http.StatusOK || r.answer(t).Accepted != 1 {
		t.Fatalf("partner's certificate: %d %s", r.code, r.body)
	}
	if got := e.counter("plantsync_hub_partner_auth_failures_total", map[string]string{"partner": "wms", "reason": "certificate"}); got != 1 {
		t.Errorf("certificate failures %g, want 1", got)
	}
}

func TestNewRefusesUnreadableSecrets(t *testing.T) {
	c := acme(t)
	c.Auth.TokenFile = filepath.Join(t.TempDir(), "missing.token")
	j := failingJournal{}
	if _, err := partner.New(partner.Options{Partners: []partner.Config{c}, Journal: j, Schemas: schema.New()}); err == nil ||
		!strings.Contains(err.Error(), "auth.token_file") || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("New with a missing token file: %v", err)
	}
	if _, err := partner.New(partner.Options{Schemas: schema.New()}); err == nil {
		t.Fatal("New without a journal succeeded")
	}
}

var update = flag.Bool("update", false, "rewrite testdata/*.answer.json")

// The answer to testdata/batch.json, as a partner reads it.
func TestAnswerGolden(t *testing.T) {
	e := start(t, nil, acme(t))
	body, err := os.ReadFile(filepath.Join("testdata", "batch.json"))
	if err != nil {
		t.Fatal(err)
	}
	r := e.post(nil, "acme", body, bearer(acmeToken)...)
	golden := filepath.Join("testdata", "batch.answer.json")
	if *update {
		if err := os.WriteFile(golden, r.body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestAnswerGolden -update to create it)", err)
	}
	if r.code != http.StatusUnprocessableEntity || !bytes.Equal(r.body, want) {
		t.Fatalf("answer %d differs from %s (go test -run TestAnswerGolden -update rewrites it):\n%s", r.code, golden, r.body)
	}
}
