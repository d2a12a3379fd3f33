package partner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/partner"
	"github.com/plantsync/plantsync/hub/schema"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// memJournal commits in memory with the journal's dedup by id, so a fuzz
// iteration costs no fsync.
type memJournal struct {
	journal.Journal
	mu  sync.Mutex
	ids map[string]uint64
	raw map[uint64][]byte
}

func (m *memJournal) Commit(_ context.Context, b *journal.Batch) (journal.Outcome, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o := journal.Outcome{Results: make([]journal.Result, len(b.Events))}
	for i, in := range b.Events {
		if pos, dup := m.ids[in.ID]; dup {
			o.Results[i] = journal.Result{Status: journal.StatusDuplicate, Position: pos}
			o.Duplicates++
			continue
		}
		pos := uint64(len(m.raw) + 1)
		m.ids[in.ID], m.raw[pos] = pos, in.Raw
		o.Results[i] = journal.Result{Status: journal.StatusJournaled, Position: pos}
		o.Journaled++
	}
	return o, nil
}

// FuzzPartnerIngest posts arbitrary bodies: the endpoint may refuse them,
// never panic, and always answers JSON that accounts for every event; what
// it accepts is journaled, valid against its schema, under its derived id.
func FuzzPartnerIngest(f *testing.F) {
	for _, name := range []string{"confirmation.json", "batch.json"} {
		raw, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	for _, s := range []string{
		``, `{}`, `[]`, `[{}]`, `{"events": null}`, `{"events": [1, "x", null, {}]}`, `{"id": "A",,}`,
		`{"id":"x","supplier_confirmation":{"lines":[{"bogus":"1"}]}}`, `{"id":"x","attributes":{"a":1}}`,
		`{"id":"GR","type":"goods.receipt","plant":"DE-01","occurred_at":"2026-11-27T10:00:00Z","goods_receipt":{"purchase_order":"P","item":"I","quantity":{"value":"1","unit":"EA"}}}`,
		`{"id":"x","type":"buffer.overflow","plant":"DE-01","occurred_at":"2026-11-27T10:00:00Z","buffer_overflow":{"dropped":[{"first":"1","last":"2"}]}}`,
		"{\"id\":\"\xff\"}", `{"id": "a\u0000b"}`, `{"id": 1e999}`, `[[[[[[[[]]]]]]]]`,
	} {
		f.Add([]byte(s))
	}
	reg := schema.New()
	var types []string
	for _, t := range reg.Types() {
		if !t.Operational {
			types = append(types, t.Name)
		}
	}
	var (
		clockMu sync.Mutex
		now     = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	)
	tick := func() time.Time { // a second per call: the rate limit never bites
		clockMu.Lock()
		defer clockMu.Unlock()
		now = now.Add(time.Second)
		return now
	}
	cfg := partner.Config{Name: "acme", Types: types, Plants: []string{"*"}, MaxBatchEvents: 10,
		Auth:      partner.Auth{TokenFile: writeSecret(f, "t", acmeToken)},
		RateLimit: partner.RateLimit{RequestsPerSecond: 10000, Burst: 100000}}
	if errs := partner.Validate("partners", []partner.Config{cfg}, false); len(errs) > 0 {
		f.Fatal(errs)
	}
	mem := &memJournal{ids: map[string]uint64{}, raw: map[uint64][]byte{}}
	h, err := partner.New(partner.Options{Partners: []partner.Config{cfg}, Journal: mem, Schemas: reg, Now: tick})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/ingest/acme", bytes.NewReader(body))
		req.SetPathValue("partner", "acme")
		req.Header.Set("Authorization", "Bearer "+acmeToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusUnprocessableEntity:
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusForbidden:
			var r partner.Refusal
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil || r.Error == "" {
				t.Fatalf("%d without an error message: %v %s", rec.Code, err, rec.Body)
			}
			return
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var a partner.Answer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatalf("answer is not JSON: %v", err)
		}
		if a.Accepted+a.Duplicates+a.Rejected != len(a.Results) || len(a.Results) == 0 || (a.Rejected > 0) != (rec.Code == http.StatusUnprocessableEntity) {
			t.Fatalf("counts do not add up (status %d): %s", rec.Code, rec.Body)
		}
		for i, r := range a.Results {
			if r.Index != i {
				t.Fatalf("result %d has index %d", i, r.Index)
			}
			switch r.Status {
			case partner.StatusAccepted, partner.StatusDuplicate:
				if r.EventID != partner.EventID("acme", r.ID) || r.Position == 0 || len(r.Errors) > 0 {
					t.Fatalf("result %d: %+v", i, r)
				}
				mem.mu.Lock()
				raw := mem.raw[r.Position]
				mem.mu.Unlock()
				var ev pb.Event
				if err := proto.Unmarshal(raw, &ev); err != nil {
					t.Fatalf("journaled event %d does not decode: %v", r.Position, err)
				}
				if r.Status == partner.StatusAccepted {
					if _, err := reg.Validate(&ev); err != nil || ev.GetId() != r.EventID || ev.GetSource().GetKind() != partner.SourceKind ||
						ev.GetAttributes()[partner.AttrPartnerID] != r.ID {
						t.Fatalf("accepted event %+v: %v", &ev, err)
					}
				}
			case partner.StatusRejected:
				if len(r.Errors) == 0 {
					t.Fatalf("rejected without errors: %+v", r)
				}
				for _, e := range r.Errors {
					if e.Reason == "" {
						t.Fatalf("error without a reason: %+v", r)
					}
				}
			default:
				t.Fatalf("result %d has status %q", i, r.Status)
			}
		}
	})
}
