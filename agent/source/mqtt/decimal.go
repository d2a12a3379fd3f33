package mqtt

import (
	"fmt"
	"math/big"
	"strings"
)

// Decimal quantities travel as text (pb.Quantity.value) and are computed
// with math/big.Rat, never through a float: "0.1" kg stays 0.1 kg.

// convertPrecision bounds the digits after the point of a conversion whose
// exact result does not terminate (e.g. kg to lb).
const convertPrecision = 9

// isPlainDecimal reports whether s is [-]digits[.digits].
func isPlainDecimal(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	dot := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
		case c == '.' && !dot && i > 0 && i < len(s)-1:
			dot = true
		default:
			return false
		}
	}
	return true
}

// maxDecimalLen bounds decimal text so that a hostile "1e999999999" cannot
// make math/big allocate gigabytes.
const maxDecimalLen = 64

// parseDecimal reads a decimal given as text or as a JSON number literal
// (exponents allowed) exactly.
func parseDecimal(s string) (*big.Rat, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("empty; want a decimal such as \"12.5\"")
	}
	if len(s) > maxDecimalLen {
		return nil, fmt.Errorf("%.20q... is longer than %d characters", s, maxDecimalLen)
	}
	if isPlainDecimal(s) {
		r, ok := new(big.Rat).SetString(s)
		if ok {
			return r, nil
		}
	}
	mant, exp, hasExp := strings.Cut(strings.ToLower(s), "e")
	if hasExp && isPlainDecimal(mant) {
		var e int
		if _, err := fmt.Sscanf(exp, "%d", &e); err == nil && e >= -40 && e <= 40 && strings.Trim(exp, "+-0123456789") == "" {
			r, ok := new(big.Rat).SetString(mant)
			if ok {
				p := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(e))), nil))
				if e >= 0 {
					return r.Mul(r, p), nil
				}
				return r.Quo(r, p), nil
			}
		}
	}
	return nil, fmt.Errorf("%q is not a decimal", s)
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}

// normalizeDecimal returns plain decimal text for s: plain input is kept
// as written ("12.50" stays "12.50"), exponent forms are expanded.
func normalizeDecimal(s string) (string, error) {
	s = strings.TrimSpace(s)
	if isPlainDecimal(s) {
		return s, nil
	}
	r, err := parseDecimal(s)
	if err != nil {
		return "", err
	}
	return formatRat(r), nil
}

// formatRat writes r as plain decimal text: exact when it terminates,
// otherwise rounded to convertPrecision digits.
func formatRat(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	// r terminates exactly when its denominator is 2^a * 5^b; it then needs
	// max(a, b) digits after the point.
	den := new(big.Int).Set(r.Denom())
	var q, m big.Int
	count := func(p int64) int {
		n := 0
		for {
			q.QuoRem(den, big.NewInt(p), &m)
			if m.Sign() != 0 {
				return n
			}
			den.Set(&q)
			n++
		}
	}
	twos, fives := count(2), count(5)
	if den.IsInt64() && den.Int64() == 1 {
		return r.FloatString(max(twos, fives))
	}
	s := strings.TrimRight(r.FloatString(convertPrecision), "0")
	return strings.TrimSuffix(s, ".")
}

// unitFactor is how many base units of its dimension one unit is, as exact
// decimal text.
type unitFactor struct {
	dimension string
	factor    string
}

// units is the conversion table for from_unit. Codes are as MES systems
// commonly send them; add one here with its exact factor.
var units = map[string]unitFactor{
	"mg": {"mass", "0.000001"}, "g": {"mass", "0.001"}, "kg": {"mass", "1"}, "t": {"mass", "1000"},
	"lb": {"mass", "0.45359237"}, "oz": {"mass", "0.028349523125"},
	"mm": {"length", "0.001"}, "cm": {"length", "0.01"}, "m": {"length", "1"}, "km": {"length", "1000"},
	"in": {"length", "0.0254"}, "ft": {"length", "0.3048"},
	"ml": {"volume", "0.001"}, "l": {"volume", "1"}, "m3": {"volume", "1000"},
	"ms": {"time", "0.001"}, "s": {"time", "1"}, "min": {"time", "60"}, "h": {"time", "3600"},
	"EA": {"count", "1"}, "PCS": {"count", "1"}, "DZ": {"count", "12"},
}

func unitNames() string {
	return strings.Join(sortedKeys(units), ", ")
}

// checkConversion validates a from_unit/unit pair.
func checkConversion(from, to string) error {
	f, ok := units[from]
	if !ok {
		return fmt.Errorf("from_unit %q is not in the unit table (%s)", from, unitNames())
	}
	t, ok := units[to]
	if !ok {
		return fmt.Errorf("unit %q is not in the unit table (%s); from_unit needs a known target unit", to, unitNames())
	}
	if f.dimension != t.dimension {
		return fmt.Errorf("cannot convert %s (%s) to %s (%s)", from, f.dimension, to, t.dimension)
	}
	return nil
}

// convertUnit converts decimal text v from one unit into another exactly.
func convertUnit(v, from, to string) (string, error) {
	if err := checkConversion(from, to); err != nil {
		return "", err
	}
	r, err := parseDecimal(v)
	if err != nil {
		return "", err
	}
	ff, _ := new(big.Rat).SetString(units[from].factor)
	tf, _ := new(big.Rat).SetString(units[to].factor)
	r.Mul(r, ff).Quo(r, tf)
	return formatRat(r), nil
}

// decimalArith applies op to two decimals exactly (CEL dec_add and friends).
func decimalArith(op string, a, b string) (string, error) {
	x, err := parseDecimal(a)
	if err != nil {
		return "", err
	}
	y, err := parseDecimal(b)
	if err != nil {
		return "", err
	}
	switch op {
	case "add":
		x.Add(x, y)
	case "sub":
		x.Sub(x, y)
	case "mul":
		x.Mul(x, y)
	default:
		return "", fmt.Errorf("unknown decimal operation %q", op)
	}
	return formatRat(x), nil
}
