package decimal

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
)

// Limits keep one malformed value from costing unbounded work.
const (
	// MaxDigits bounds the digits of a parsed value.
	MaxDigits = 40
	// MaxScale bounds the digits after the point of any value.
	MaxScale = 18
)

// ErrSyntax marks text that is not a decimal number.
var ErrSyntax = errors.New("not a decimal number")

// ErrRange marks a value or result beyond MaxDigits or MaxScale.
var ErrRange = errors.New("decimal out of range")

// ErrDivisionByZero is returned by Quo for a zero divisor.
var ErrDivisionByZero = errors.New("decimal division by zero")

// Decimal is an exact decimal number: coef × 10^-scale. The zero value is 0.
// Values are immutable; operations return new values.
type Decimal struct {
	coef  *big.Int // nil means zero; never mutated once set
	scale int32
}

var ten = big.NewInt(10)

func (d Decimal) c() *big.Int {
	if d.coef == nil {
		return new(big.Int)
	}
	return d.coef
}

// Parse reads "-12.50", "0.125" or "7". Signs other than a leading minus,
// exponents, spaces and separators are refused so that what a plant sends
// is what is stored.
func Parse(s string) (Decimal, error) {
	if s == "" {
		return Decimal{}, fmt.Errorf("%w: empty", ErrSyntax)
	}
	body := s
	if body[0] == '-' {
		body = body[1:]
	}
	if body == "" {
		return Decimal{}, fmt.Errorf("%w: %q", ErrSyntax, s)
	}
	digits, scale, dot := 0, int32(0), false
	for i := 0; i < len(body); i++ {
		ch := body[i]
		switch {
		case ch >= '0' && ch <= '9':
			digits++
			if dot {
				scale++
			}
		case ch == '.' && !dot && i > 0 && i < len(body)-1:
			dot = true
		default:
			return Decimal{}, fmt.Errorf("%w: %q; want digits with an optional point, e.g. 12.5", ErrSyntax, s)
		}
	}
	if digits > MaxDigits || scale > MaxScale {
		return Decimal{}, fmt.Errorf("%w: %q has more than %d digits or %d decimals", ErrRange, s, MaxDigits, MaxScale)
	}
	var c big.Int
	if len(s) <= 19 && !dot {
		// Fast path for short integers.
		v, err := strconv.ParseInt(s, 10, 64)
		if err == nil {
			c.SetInt64(v)
			return Decimal{coef: &c}, nil
		}
	}
	txt := s
	if dot {
		txt = stripDot(s)
	}
	if _, ok := c.SetString(txt, 10); !ok {
		return Decimal{}, fmt.Errorf("%w: %q", ErrSyntax, s)
	}
	return Decimal{coef: &c, scale: scale}, nil
}

func stripDot(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '.' {
			b = append(b, s[i])
		}
	}
	return string(b)
}

// IsValid reports whether s parses.
func IsValid(s string) bool {
	_, err := Parse(s)
	return err == nil
}

// FromInt is v as a decimal.
func FromInt(v int64) Decimal { return Decimal{coef: big.NewInt(v)} }

// Scale is the number of digits after the point.
func (d Decimal) Scale() int32 { return d.scale }

// Sign is -1, 0 or 1.
func (d Decimal) Sign() int { return d.c().Sign() }

// IsZero reports d == 0.
func (d Decimal) IsZero() bool { return d.Sign() == 0 }

func pow10(n int32) *big.Int {
	return new(big.Int).Exp(ten, big.NewInt(int64(n)), nil)
}

// align returns both coefficients at the larger scale.
func align(a, b Decimal) (*big.Int, *big.Int, int32) {
	switch {
	case a.scale == b.scale:
		return a.c(), b.c(), a.scale
	case a.scale > b.scale:
		return a.c(), new(big.Int).Mul(b.c(), pow10(a.scale-b.scale)), a.scale
	default:
		return new(big.Int).Mul(a.c(), pow10(b.scale-a.scale)), b.c(), b.scale
	}
}

// Cmp compares: -1 if d < o, 0 if equal (whatever the scales), 1 if d > o.
func (d Decimal) Cmp(o Decimal) int {
	x, y, _ := align(d, o)
	return x.Cmp(y)
}

// Equal reports numeric equality (1.50 equals 1.5).
func (d Decimal) Equal(o Decimal) bool { return d.Cmp(o) == 0 }

// Add is d + o.
func (d Decimal) Add(o Decimal) Decimal {
	x, y, s := align(d, o)
	return Decimal{coef: new(big.Int).Add(x, y), scale: s}
}

// Sub is d - o.
func (d Decimal) Sub(o Decimal) Decimal {
	x, y, s := align(d, o)
	return Decimal{coef: new(big.Int).Sub(x, y), scale: s}
}

// Neg is -d.
func (d Decimal) Neg() Decimal { return Decimal{coef: new(big.Int).Neg(d.c()), scale: d.scale} }

// Abs is |d|.
func (d Decimal) Abs() Decimal {
	if d.Sign() >= 0 {
		return d
	}
	return d.Neg()
}

// Mul is d × o, exact. The result's scale is the sum of both scales; a scale
// beyond MaxScale is an error rather than a silent rounding.
func (d Decimal) Mul(o Decimal) (Decimal, error) {
	s := d.scale + o.scale
	r := Decimal{coef: new(big.Int).Mul(d.c(), o.c()), scale: s}
	if s > MaxScale {
		// Trailing zeros may bring it back into range.
		r = r.Normalize()
		if r.scale > MaxScale {
			return Decimal{}, fmt.Errorf("%w: %s × %s needs %d decimals; round an operand first", ErrRange, d, o, r.scale)
		}
	}
	return r, nil
}

// Quo is d ÷ o rounded half away from zero to scale decimals.
func (d Decimal) Quo(o Decimal, scale int32) (Decimal, error) {
	if o.IsZero() {
		return Decimal{}, ErrDivisionByZero
	}
	if scale < 0 || scale > MaxScale {
		return Decimal{}, fmt.Errorf("%w: scale %d; want 0 to %d", ErrRange, scale, MaxScale)
	}
	// d/o = (dc/10^ds) / (oc/10^os); scaled by 10^(scale+1) for one guard digit.
	num := new(big.Int).Mul(d.c(), pow10(o.scale+scale+1))
	den := new(big.Int).Mul(o.c(), pow10(d.scale))
	q := new(big.Int).Quo(num, den)
	return roundGuard(q, scale), nil
}

// roundGuard drops one guard digit from q, rounding half away from zero.
func roundGuard(q *big.Int, scale int32) Decimal {
	r := new(big.Int)
	q, r = new(big.Int).QuoRem(q, ten, r)
	if r.CmpAbs(big.NewInt(5)) >= 0 {
		if r.Sign() > 0 {
			q.Add(q, big.NewInt(1))
		} else {
			q.Sub(q, big.NewInt(1))
		}
	}
	return Decimal{coef: q, scale: scale}
}

// RoundingMode selects how Round breaks ties.
type RoundingMode int

// Rounding modes.
const (
	// HalfUp rounds ties away from zero (2.5 → 3, -2.5 → -3), the usual
	// commercial rule.
	HalfUp RoundingMode = iota
	// HalfEven rounds ties to the even neighbour (2.5 → 2, 3.5 → 4).
	HalfEven
)

// Round returns d with exactly scale decimals (padding with zeros, or
// rounding with mode).
func (d Decimal) Round(scale int32, mode RoundingMode) Decimal {
	if scale < 0 {
		scale = 0
	}
	if scale >= d.scale {
		return Decimal{coef: new(big.Int).Mul(d.c(), pow10(scale-d.scale)), scale: scale}
	}
	div := pow10(d.scale - scale)
	q, r := new(big.Int).QuoRem(d.c(), div, new(big.Int))
	if r.Sign() != 0 {
		twice := new(big.Int).Mul(new(big.Int).Abs(r), big.NewInt(2))
		c := twice.Cmp(div)
		up := c > 0 || (c == 0 && (mode == HalfUp || q.Bit(0) == 1))
		if up {
			if d.Sign() < 0 {
				q.Sub(q, big.NewInt(1))
			} else {
				q.Add(q, big.NewInt(1))
			}
		}
	}
	return Decimal{coef: q, scale: scale}
}

// Normalize drops trailing zeros after the point (1.500 → 1.5, 2.0 → 2).
func (d Decimal) Normalize() Decimal {
	c := d.c()
	s := d.scale
	if c.Sign() == 0 {
		return Decimal{}
	}
	q, r := new(big.Int), new(big.Int)
	cur := new(big.Int).Set(c)
	for s > 0 {
		q.QuoRem(cur, ten, r)
		if r.Sign() != 0 {
			break
		}
		cur, q = q, cur
		s--
	}
	return Decimal{coef: cur, scale: s}
}

// String renders d with its scale, e.g. "12.50", "-0.125", "7".
func (d Decimal) String() string {
	c := d.c()
	if d.scale == 0 {
		return c.String()
	}
	neg := c.Sign() < 0
	digits := new(big.Int).Abs(c).String()
	for int32(len(digits)) <= d.scale {
		digits = "0" + digits
	}
	point := len(digits) - int(d.scale)
	out := digits[:point] + "." + digits[point:]
	if neg {
		out = "-" + out
	}
	return out
}

// MarshalJSON renders d as a JSON string, so no JSON reader turns it into a
// float.
func (d Decimal) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(d.String())), nil
}

// UnmarshalJSON reads a JSON string (or a bare JSON number, taken
// literally).
func (d *Decimal) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' {
		u, err := strconv.Unquote(s)
		if err != nil {
			return fmt.Errorf("%w: %s", ErrSyntax, s)
		}
		s = u
	}
	v, err := Parse(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}
