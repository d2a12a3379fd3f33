package decimal

import (
	"encoding/json"
	"errors"
	"testing"
)

func mustParse(t testing.TB, s string) Decimal {
	t.Helper()
	d, err := Parse(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return d
}

func TestParseAndString(t *testing.T) {
	for _, c := range []struct{ in, out string }{
		{"0", "0"}, {"7", "7"}, {"-7", "-7"}, {"12.50", "12.50"}, {"0.125", "0.125"},
		{"-0.5", "-0.5"}, {"007", "7"}, {"123456789012345678901234567890", "123456789012345678901234567890"},
		{"0.000000000000000001", "0.000000000000000001"},
	} {
		if got := mustParse(t, c.in).String(); got != c.out {
			t.Errorf("Parse(%q).String() = %q, want %q", c.in, got, c.out)
		}
	}
	for _, bad := range []string{"", "-", ".5", "5.", "1e3", "+1", "1,5", " 1", "1.2.3", "0x10", "0.0000000000000000001", "NaN"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		} else if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrRange) {
			t.Errorf("Parse(%q): %v is neither ErrSyntax nor ErrRange", bad, err)
		}
	}
}

func TestArithmetic(t *testing.T) {
	d := func(s string) Decimal { return mustParse(t, s) }
	if got := d("1.5").Add(d("2.25")).String(); got != "3.75" {
		t.Errorf("add = %s", got)
	}
	if got := d("1").Sub(d("2.5")).String(); got != "-1.5" {
		t.Errorf("sub = %s", got)
	}
	m, err := d("2.5").Mul(d("0.45359237"))
	if err != nil || m.String() != "1.133980925" {
		t.Errorf("mul = %s %v", m, err)
	}
	if d("1.50").Cmp(d("1.5")) != 0 || !d("1.50").Equal(d("1.5")) || d("-1").Cmp(d("0.1")) != -1 {
		t.Error("cmp ignores scale wrongly")
	}
	q, err := d("10").Quo(d("3"), 4)
	if err != nil || q.String() != "3.3333" {
		t.Errorf("quo = %s %v", q, err)
	}
	q, _ = d("2").Quo(d("3"), 2)
	if q.String() != "0.67" {
		t.Errorf("2/3 = %s", q)
	}
	q, _ = d("-2").Quo(d("3"), 2)
	if q.String() != "-0.67" {
		t.Errorf("-2/3 = %s", q)
	}
	if _, err := d("1").Quo(Decimal{}, 2); !errors.Is(err, ErrDivisionByZero) {
		t.Errorf("quo by zero: %v", err)
	}
	if _, err := d("0.000000001").Mul(d("0.0000000001")); !errors.Is(err, ErrRange) {
		t.Errorf("mul beyond max scale: %v", err)
	}
	if got := d("-3").Abs().String(); got != "3" {
		t.Errorf("abs = %s", got)
	}
}

func TestRound(t *testing.T) {
	for _, c := range []struct {
		in    string
		scale int32
		mode  RoundingMode
		out   string
	}{
		{"1.133980925", 3, HalfUp, "1.134"},
		{"2.5", 0, HalfUp, "3"},
		{"-2.5", 0, HalfUp, "-3"},
		{"2.5", 0, HalfEven, "2"},
		{"3.5", 0, HalfEven, "4"},
		{"-2.45", 1, HalfEven, "-2.4"},
		{"2.449", 1, HalfUp, "2.4"},
		{"7", 2, HalfUp, "7.00"},
		{"0.005", 2, HalfUp, "0.01"},
	} {
		if got := mustParse(t, c.in).Round(c.scale, c.mode).String(); got != c.out {
			t.Errorf("Round(%s, %d, %d) = %s, want %s", c.in, c.scale, c.mode, got, c.out)
		}
	}
	if got := mustParse(t, "1.500").Normalize().String(); got != "1.5" {
		t.Errorf("normalize = %s", got)
	}
	if got := mustParse(t, "0.000").Normalize().String(); got != "0" {
		t.Errorf("normalize zero = %s", got)
	}
}

func TestJSON(t *testing.T) {
	var v struct{ Q Decimal }
	if err := json.Unmarshal([]byte(`{"Q":"12.50"}`), &v); err != nil || v.Q.String() != "12.50" {
		t.Fatalf("unmarshal: %v %s", err, v.Q)
	}
	out, _ := json.Marshal(v)
	if string(out) != `{"Q":"12.50"}` {
		t.Fatalf("marshal: %s", out)
	}
	if err := json.Unmarshal([]byte(`{"Q":"x"}`), &v); err == nil {
		t.Fatal("bad decimal accepted")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "-1.5", "12.500", "99999999999999999999.1", "1e5", ".5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Parse(d.String())
		if err != nil || !back.Equal(d) || back.Scale() != d.Scale() {
			t.Fatalf("%q → %q does not round-trip: %v", s, d.String(), err)
		}
		if r := d.Round(2, HalfUp); r.Sub(d).Abs().Cmp(mustParse(t, "0.005")) > 0 {
			t.Fatalf("round(%s, 2) = %s is off by more than half a unit", d, r)
		}
	})
}
