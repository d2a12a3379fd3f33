package main

import (
	"errors"
	"testing"
	"time"
)

func TestChangeCursorRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 1, 123456000, time.UTC)
	c := changeCursor{Purchase: posOf(&datetime{Year: 2026, Month: 11, Day: 27, Hour: 10, Second: 1, Microsecond: 123456}, 7), Shipment: streamPos{}}
	got, err := decodeCursor(c.encode())
	if err != nil || got != c {
		t.Fatalf("round trip = %+v, %v; want %+v", got, err, c)
	}
	if got.Purchase.At != at.Format(time.RFC3339Nano) {
		t.Errorf("purchase position %q, want %s", got.Purchase.At, at.Format(time.RFC3339Nano))
	}
	// The domain after a position resumes strictly after (write_date, id).
	d := got.Purchase.after()
	if len(d) != 3 || d[0] != "OR" {
		t.Errorf("domain after a position = %v", d)
	}
	if d := (streamPos{}).after(); len(d) != 1 {
		t.Errorf("domain from the start = %v", d)
	}
	if _, err := decodeCursor("not a cursor!"); !errors.Is(err, errDocument) {
		t.Errorf("bad cursor: %v, want errDocument", err)
	}
	if c, err := decodeCursor(""); err != nil || c != (changeCursor{}) {
		t.Errorf("empty cursor = %+v, %v", c, err)
	}
}

func TestOwnMarkedAndRefs(t *testing.T) {
	if !ownMarked("", "PO from "+marker("c17a613d727280b5")) || ownMarked("BUYER-1", "plantsync mentioned, no marker") {
		t.Error("ownMarked does not tell plantsync's marker")
	}
	s := "purchase.line,42"
	if id, ok := refID(&s, "purchase.line"); !ok || id != 42 {
		t.Errorf("refID = %d, %v", id, ok)
	}
	if _, ok := refID(&s, "sale.line"); ok {
		t.Error("refID matched another model")
	}
	if _, ok := refID(nil, "purchase.line"); ok {
		t.Error("refID of nil")
	}
	if m := correlationRE.FindStringSubmatch(describe(requisition{CorrelationID: "corr-9", Plant: "1"}, "k")); m == nil || m[1] != "corr-9" {
		t.Errorf("correlation not found in the description describe writes: %v", m)
	}
}
