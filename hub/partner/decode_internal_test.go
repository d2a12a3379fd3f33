package partner

import (
	"testing"
	"time"
)

func TestJSONPath(t *testing.T) {
	raw := []byte(`{"a": {"b": [1, {"c": "x", "d": [true, null]}]}, "e": "f"}`)
	for _, tc := range []struct {
		at   string // first occurrence in raw
		want string
	}{
		{`"a"`, "a"},
		{`{"b"`, "a"},
		{`"b"`, "a.b"},
		{`1,`, "a.b[0]"},
		{`{"c"`, "a.b[1]"},
		{`"c"`, "a.b[1].c"},
		{`"x"`, "a.b[1].c"},
		{`true`, "a.b[1].d[0]"},
		{`null`, "a.b[1].d[1]"},
		{`"e"`, "e"},
		{`"f"`, "e"},
	} {
		off := indexOf(raw, tc.at)
		if got := jsonPath(raw, off); got != tc.want {
			t.Errorf("path at %q (offset %d) = %q, want %q", tc.at, off, got, tc.want)
		}
	}
}

func indexOf(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

func TestOffsetOf(t *testing.T) {
	raw := []byte("{\"ä\": 1,\n  \"b\": 2}")
	if got := offsetOf(raw, 2, 3); got != 12 || raw[got] != '"' {
		t.Fatalf("offsetOf(2:3) = %d", got)
	}
	if got := offsetOf(raw, 1, 6); raw[got] != ' ' || got != 6 {
		t.Fatalf("offsetOf(1:6) = %d, want 6 (ä is one column, two bytes)", got)
	}
}

func TestBucket(t *testing.T) {
	var now = bucketEpoch
	b := newBucket(2, 3, now)
	for i := range 3 {
		if ok, _ := b.take(now); !ok {
			t.Fatalf("take %d within burst refused", i)
		}
	}
	ok, wait := b.take(now)
	if ok || wait != 500*time.Millisecond || retryAfter(wait) != 1 {
		t.Fatalf("over burst: ok %v wait %s", ok, wait)
	}
	now = now.Add(wait)
	if ok, _ := b.take(now); !ok {
		t.Fatal("refused after waiting")
	}
	// A clock that goes back never adds tokens.
	if ok, _ := b.take(now.Add(-time.Second)); ok {
		t.Fatal("a clock step back refilled the bucket")
	}
}

var bucketEpoch = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
