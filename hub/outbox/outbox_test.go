package outbox

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// The hand-written encoder agrees with encoding/json, so entries read back
// with json.Unmarshal exactly.
func TestEncodeMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	for _, e := range []Entry{
		{Destination: "erp", IdempotencyKey: IdempotencyKey("e1", "erp", "a"), Action: "a", OrderingKey: "order:DE01:PO-1",
			Document: json.RawMessage(`{"x":"1.5"}`), CreatedAt: at, State: StatePending,
			Lineage: Lineage{EventID: "e1", CorrelationID: "c<1>&\"q\"\n\t\x01\u2028é\xff", EventType: "t", Plant: "DE-01", Producer: "agent:a",
				JournalPosition: 7, Rule: "r", Crosswalks: map[string]uint64{"item": 3, "erp.unit": 1}, ProcessedAt: at, Approval: 2, ReplayOf: 9}},
		{Destination: "alerts", Document: json.RawMessage(`[1, 2]`), State: StateDelivered, Attempts: 3, ExternalRef: "alert:1", CompletedAt: &at, Message: "ok"},
		{Destination: "x", State: StatePending},
	} {
		got, err := Encode(&e)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(e)
		// Encode drops Seq and compacts nothing inside the document.
		var a, b map[string]any
		if err := json.Unmarshal(got[1:], &a); err != nil {
			t.Fatalf("%s: %v", got[1:], err)
		}
		_ = json.Unmarshal(want, &b)
		delete(b, "seq")
		ga, _ := json.Marshal(a)
		gb, _ := json.Marshal(b)
		if string(ga) != string(gb) {
			t.Errorf("encode differs:\n got %s\nwant %s", ga, gb)
		}
		back, err := decode(boltkv.U64(5), got)
		wantCorr := e.Lineage.CorrelationID
		if e.Lineage.CorrelationID != "" {
			var s string
			_ = json.Unmarshal(appendString(nil, wantCorr), &s)
			wantCorr = s // invalid UTF-8 reads back as U+FFFD, as with encoding/json
		}
		if err != nil || back.Seq != 5 || back.State != e.State || back.Lineage.CorrelationID != wantCorr || back.Attempts != e.Attempts {
			t.Fatalf("decode: %+v %v", back, err)
		}
	}
	if err := Validate(&Entry{Document: json.RawMessage(`{bad`)}); err == nil {
		t.Fatal("invalid document accepted")
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "q\"\\", "<&>", "\x00\x1f", "é\u2028\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		want, _ := json.Marshal(s)
		if string(got) != string(want) {
			t.Fatalf("%q: got %s want %s", s, got, want)
		}
	})
}
