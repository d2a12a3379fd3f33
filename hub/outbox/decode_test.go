package outbox

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	segjson "github.com/segmentio/encoding/json"

	"github.com/plantsync/plantsync/internal/boltkv"
)

func decodeSamples() []Entry {
	at := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	done := at.Add(time.Minute)
	cet := time.Date(2026, 11, 27, 11, 0, 0, 5, time.FixedZone("", 3600))
	return []Entry{
		benchEntry(7),
		{Destination: "erp", IdempotencyKey: "k", Action: "a", OrderingKey: "order:DE01:PO-1", Document: json.RawMessage(`[1, "x\"]}", {"a": [true, null]}]`),
			CreatedAt: cet, State: StateFailed, Attempts: 3, ExternalRef: "PO-9 ü", CompletedAt: &done, Message: "timeout: 504",
			Lineage: Lineage{EventID: "é", Plant: "DE-01", JournalPosition: 18446744073709551615, Crosswalks: map[string]uint64{"in.item": 0},
				ProcessedAt: at, Approval: 4, ReplayOf: 2}},
		{Destination: "x", Document: json.RawMessage(`{}`), State: StatePending},
	}
}

// Every entry Encode writes reads back whole through decode.
func TestDecodeRoundTrip(t *testing.T) {
	for i, e := range decodeSamples() {
		v, err := Encode(&e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decode(boltkv.U64(9), v)
		if err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		var want Entry
		if err := json.Unmarshal(v[1:], &want); err != nil {
			t.Fatal(err)
		}
		want.Seq, want.State = 9, stateOf(v[0])
		if !reflect.DeepEqual(got, want) {
			t.Errorf("sample %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	if _, err := decode(boltkv.U64(3), append([]byte{StatePending.byte()}, `{"destination":`...)); err == nil {
		t.Error("a truncated entry decoded without an error")
	}
}

// A decoded entry owns its bytes: the stored value is bbolt's mmap, valid
// only inside the transaction that read it.
func TestDecodeCopiesOutOfTheValue(t *testing.T) {
	e := decodeSamples()[1]
	v, err := Encode(&e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decode(boltkv.U64(9), v)
	if err != nil {
		t.Fatal(err)
	}
	want := got.Destination + "|" + got.IdempotencyKey + "|" + got.Lineage.EventID + "|" + string(got.Document)
	for i := range v {
		v[i] = 'z' // what a later transaction may write to the same page
	}
	if after := got.Destination + "|" + got.IdempotencyKey + "|" + got.Lineage.EventID + "|" + string(got.Document); after != want {
		t.Fatalf("entry changed with the stored value: %q, was %q", after, want)
	}
}

// segmentio's decoder, which decode uses first, reads what encoding/json
// reads: the same entry, or a refusal (decode then asks encoding/json).
func FuzzDecodeEntry(f *testing.F) {
	for _, e := range decodeSamples() {
		v, _ := Encode(&e)
		f.Add(v[1:])
	}
	f.Add([]byte(`{"destination":"a\"b","document":null,"lineage":{"journal_position":01}}`))
	f.Add([]byte(`{"seq":3,"destination":"a","DESTINATION":"b","attempts":1e2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Entry
		if segjson.Unmarshal(b, &got) != nil {
			return
		}
		var want Entry
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("segmentio took what encoding/json refuses (%v): %q", err, b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n segmentio     %+v\n encoding/json %+v", b, got, want)
		}
	})
}
