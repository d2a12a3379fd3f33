package main

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestChangeCursorRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 0, 1, 123456000, time.UTC)
	c := changeCursor{Purchase: streamPos{At: at.Format(time.RFC3339Nano), ID: 7, Front: at.UnixMicro(), Seen: [][2]int64{{7, at.UnixMicro()}}}}
	got, err := decodeCursor(c.encode())
	if err != nil || !reflect.DeepEqual(got, c) {
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
	if c, err := decodeCursor(""); err != nil || !reflect.DeepEqual(c, changeCursor{}) {
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

// A stream that caught up reads the settle window again and reports only
// what it has not reported: a record a long transaction committed with a
// write_date before records already read is not skipped, and nothing is
// reported twice.
func TestStreamReadsTheSettleWindowAgain(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	const settle = 10 * time.Minute
	var p streamPos
	reported := func(rows []rowKey, limit int) ([]int, bool) {
		t.Helper()
		report, more := p.read(rows, limit, settle)
		var ids []int
		for i, r := range rows {
			if report[i] {
				ids = append(ids, r.ID)
			}
		}
		// The cursor survives its encoding.
		c, err := decodeCursor(changeCursor{Purchase: p}.encode())
		if err != nil || !reflect.DeepEqual(c.Purchase, p) {
			t.Fatalf("cursor round trip: %+v, %v", c.Purchase, err)
		}
		return ids, more
	}
	check := func(what string, got []int, more bool, want []int, wantMore bool) {
		t.Helper()
		if !reflect.DeepEqual(got, want) || more != wantMore {
			t.Errorf("%s: reported %v more %v; want %v more %v", what, got, more, want, wantMore)
		}
	}
	// Pages of two: 1, 2 (full page), then 3 (caught up).
	got, more := reported([]rowKey{{1, at(1)}, {2, at(2)}}, 2)
	check("page 1", got, more, []int{1, 2}, true)
	if p.At != at(2).Format(time.RFC3339Nano) || p.ID != 2 {
		t.Fatalf("a full page goes on after its last record: %+v", p)
	}
	got, more = reported([]rowKey{{3, at(3)}}, 2)
	check("page 2", got, more, []int{3}, false)
	if want := at(3).Add(-settle).Format(time.RFC3339Nano); p.At != want || p.ID != 0 {
		t.Fatalf("caught up: position %s/%d, want the settle window back, %s/0", p.At, p.ID, want)
	}
	// Read again: 1, 2 and 3 are known; 9, committed late with a
	// write_date between 2 and 3, is new.
	got, more = reported([]rowKey{{1, at(1)}, {2, at(2)}}, 2)
	check("window page 1", got, more, nil, true)
	got, more = reported([]rowKey{{9, at(2).Add(time.Millisecond)}, {3, at(3)}}, 2)
	check("window page 2", got, more, []int{9}, true)
	got, more = reported(nil, 2)
	check("window end", got, more, nil, false)
	// Records older than the window are forgotten as the front moves on.
	got, more = reported([]rowKey{{4, at(3).Add(settle + time.Second)}}, 2)
	check("much later", got, more, []int{4}, false)
	for _, s := range p.Seen {
		if s[0] != 4 {
			t.Errorf("record %d kept although it is older than the window: %v", s[0], p.Seen)
		}
	}
	// Without a settle window the stream goes strictly forward and
	// remembers nothing.
	var q streamPos
	if _, more := q.read([]rowKey{{1, at(1)}}, 2, 0); more || q.At != at(1).Format(time.RFC3339Nano) || q.ID != 1 || q.Seen != nil {
		t.Errorf("settle 0: %+v more %v", q, more)
	}
}

func TestStreamForgetsBeyondMaxSeen(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	var p streamPos
	rows := make([]rowKey, maxSeen+10)
	for i := range rows {
		rows[i] = rowKey{ID: i + 1, At: t0.Add(time.Duration(i) * time.Millisecond)}
	}
	p.read(rows, len(rows)+1, time.Hour)
	if len(p.Seen) != maxSeen || p.Seen[0][0] != 11 {
		t.Fatalf("seen %d, first %v; want the newest %d", len(p.Seen), p.Seen[0], maxSeen)
	}
}
