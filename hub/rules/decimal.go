package rules

import (
	"fmt"
	"reflect"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"

	"github.com/plantsync/plantsync/hub/decimal"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// DecimalType is the CEL type of exact decimals. Its traits let the
// standard operators (+, -, *, unary -, <, <=, >, >=) dispatch to Decimal's
// methods, since CEL's operators are single bindings over traits.
var DecimalType = cel.ObjectType("decimal",
	traits.AdderType, traits.SubtractorType, traits.MultiplierType, traits.NegatorType, traits.ComparerType)

// Decimal is a decimal.Decimal as a CEL value.
type Decimal struct{ decimal.Decimal }

// ConvertToNative implements ref.Val.
func (d Decimal) ConvertToNative(t reflect.Type) (any, error) {
	switch {
	case t == reflect.TypeFor[decimal.Decimal]():
		return d.Decimal, nil
	case t.Kind() == reflect.String:
		return d.String(), nil
	}
	return nil, fmt.Errorf("unsupported conversion of decimal to %v", t)
}

// ConvertToType implements ref.Val.
func (d Decimal) ConvertToType(t ref.Type) ref.Val {
	switch t {
	case types.StringType:
		return types.String(d.String())
	case DecimalType:
		return d
	case types.TypeType:
		return DecimalType
	}
	return types.NewErr("type conversion error from decimal to '%s'", t)
}

// Equal implements ref.Val: numeric equality, whatever the scales.
func (d Decimal) Equal(o ref.Val) ref.Val {
	od, ok := o.(Decimal)
	if !ok {
		return types.False
	}
	return types.Bool(d.Decimal.Equal(od.Decimal))
}

// Type implements ref.Val.
func (d Decimal) Type() ref.Type { return DecimalType }

// Value implements ref.Val.
func (d Decimal) Value() any { return d.Decimal }

// Add implements traits.Adder.
func (d Decimal) Add(o ref.Val) ref.Val {
	b, e := decArg(o)
	if e != nil {
		return e
	}
	return Decimal{d.Decimal.Add(b)}
}

// Subtract implements traits.Subtractor.
func (d Decimal) Subtract(o ref.Val) ref.Val {
	b, e := decArg(o)
	if e != nil {
		return e
	}
	return Decimal{d.Decimal.Sub(b)}
}

// Multiply implements traits.Multiplier.
func (d Decimal) Multiply(o ref.Val) ref.Val {
	b, e := decArg(o)
	if e != nil {
		return e
	}
	return mulVal(d.Decimal, b)
}

// Negate implements traits.Negater.
func (d Decimal) Negate() ref.Val { return Decimal{d.Decimal.Neg()} }

// Compare implements traits.Comparer.
func (d Decimal) Compare(o ref.Val) ref.Val {
	b, e := decArg(o)
	if e != nil {
		return e
	}
	return types.Int(d.Decimal.Cmp(b))
}

func decArg(v ref.Val) (decimal.Decimal, ref.Val) {
	d, ok := v.(Decimal)
	if !ok {
		return decimal.Decimal{}, types.NewErr("want a decimal, got %s", v.Type())
	}
	return d.Decimal, nil
}

func binDec(f func(a, b decimal.Decimal) ref.Val) func(l, r ref.Val) ref.Val {
	return func(l, r ref.Val) ref.Val {
		a, e := decArg(l)
		if e != nil {
			return e
		}
		b, e := decArg(r)
		if e != nil {
			return e
		}
		return f(a, b)
	}
}

func parseDec(s string) ref.Val {
	d, err := decimal.Parse(s)
	if err != nil {
		return types.NewErr("decimal(%q): %v", s, err)
	}
	return Decimal{d}
}

func mulVal(a, b decimal.Decimal) ref.Val {
	m, err := a.Mul(b)
	if err != nil {
		return types.NewErr("%v", err)
	}
	return Decimal{m}
}

func scaleArg(v ref.Val) (int32, ref.Val) {
	n, ok := v.(types.Int)
	if !ok || n < 0 || n > decimal.MaxScale {
		return 0, types.NewErr("scale %v: want a whole number 0 to %d", v, decimal.MaxScale)
	}
	return int32(n), nil
}

// decimalLib declares the decimal type, its conversions, operators and
// functions.
func decimalLib() []cel.EnvOption {
	dec := []*cel.Type{DecimalType, DecimalType}
	quantity := cel.ObjectType("plantsync.v1.Quantity")
	return []cel.EnvOption{
		cel.Types(DecimalType),
		cel.Function("decimal",
			cel.Overload("string_to_decimal", []*cel.Type{cel.StringType}, DecimalType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					s, ok := v.(types.String)
					if !ok {
						return types.NewErr("decimal: want a string")
					}
					return parseDec(string(s))
				})),
			cel.Overload("int_to_decimal", []*cel.Type{cel.IntType}, DecimalType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					n, ok := v.(types.Int)
					if !ok {
						return types.NewErr("decimal: want an int")
					}
					return Decimal{decimal.FromInt(int64(n))}
				})),
			cel.Overload("quantity_to_decimal", []*cel.Type{quantity}, DecimalType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					q, ok := v.Value().(*pb.Quantity)
					if !ok {
						return types.NewErr("decimal: want a Quantity")
					}
					return parseDec(q.GetValue())
				})),
		),
		cel.Function("string", cel.Overload("decimal_to_string", []*cel.Type{DecimalType}, cel.StringType,
			cel.UnaryBinding(func(v ref.Val) ref.Val {
				d, e := decArg(v)
				if e != nil {
					return e
				}
				return types.String(d.String())
			}))),
		// Declarations only: the standard library's trait dispatch runs them.
		cel.Function(operators.Add, cel.Overload("add_decimal", dec, DecimalType)),
		cel.Function(operators.Subtract, cel.Overload("subtract_decimal", dec, DecimalType)),
		cel.Function(operators.Multiply, cel.Overload("multiply_decimal", dec, DecimalType)),
		cel.Function(operators.Negate, cel.Overload("negate_decimal", []*cel.Type{DecimalType}, DecimalType)),
		cel.Function(operators.Less, cel.Overload("less_decimal", dec, cel.BoolType)),
		cel.Function(operators.LessEquals, cel.Overload("less_equals_decimal", dec, cel.BoolType)),
		cel.Function(operators.Greater, cel.Overload("greater_decimal", dec, cel.BoolType)),
		cel.Function(operators.GreaterEquals, cel.Overload("greater_equals_decimal", dec, cel.BoolType)),
		cel.Function("add", cel.MemberOverload("decimal_add", dec, DecimalType,
			cel.BinaryBinding(binDec(func(a, b decimal.Decimal) ref.Val { return Decimal{a.Add(b)} })))),
		cel.Function("sub", cel.MemberOverload("decimal_sub", dec, DecimalType,
			cel.BinaryBinding(binDec(func(a, b decimal.Decimal) ref.Val { return Decimal{a.Sub(b)} })))),
		cel.Function("mul", cel.MemberOverload("decimal_mul", dec, DecimalType,
			cel.BinaryBinding(binDec(mulVal)))),
		cel.Function("compare", cel.MemberOverload("decimal_compare", dec, cel.IntType,
			cel.BinaryBinding(binDec(func(a, b decimal.Decimal) ref.Val { return types.Int(a.Cmp(b)) })))),
		cel.Function("div", cel.MemberOverload("decimal_div", []*cel.Type{DecimalType, DecimalType, cel.IntType}, DecimalType,
			cel.FunctionBinding(func(args ...ref.Val) ref.Val {
				a, e := decArg(args[0])
				if e != nil {
					return e
				}
				b, e := decArg(args[1])
				if e != nil {
					return e
				}
				s, e := scaleArg(args[2])
				if e != nil {
					return e
				}
				q, err := a.Quo(b, s)
				if err != nil {
					return types.NewErr("%v", err)
				}
				return Decimal{q}
			}))),
		cel.Function("convert", cel.MemberOverload("decimal_convert", []*cel.Type{DecimalType, DecimalType, cel.IntType}, DecimalType,
			cel.FunctionBinding(func(args ...ref.Val) ref.Val {
				a, e := decArg(args[0])
				if e != nil {
					return e
				}
				f, e := decArg(args[1])
				if e != nil {
					return e
				}
				s, e := scaleArg(args[2])
				if e != nil {
					return e
				}
				m, err := a.Mul(f)
				if err != nil {
					return types.NewErr("%v", err)
				}
				return Decimal{m.Round(s, decimal.HalfUp)}
			}))),
		cel.Function("round", cel.MemberOverload("decimal_round", []*cel.Type{DecimalType, cel.IntType}, DecimalType,
			cel.BinaryBinding(func(l, r ref.Val) ref.Val {
				a, e := decArg(l)
				if e != nil {
					return e
				}
				s, e := scaleArg(r)
				if e != nil {
					return e
				}
				return Decimal{a.Round(s, decimal.HalfUp)}
			}))),
		cel.Function("abs",
			cel.MemberOverload("decimal_abs", []*cel.Type{DecimalType}, DecimalType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					d, e := decArg(v)
					if e != nil {
						return e
					}
					return Decimal{d.Abs()}
				})),
			cel.MemberOverload("duration_abs", []*cel.Type{cel.DurationType}, cel.DurationType,
				cel.UnaryBinding(func(v ref.Val) ref.Val {
					d, ok := v.(types.Duration)
					if !ok {
						return types.NewErr("abs: want a duration")
					}
					if d.Duration < 0 {
						return types.Duration{Duration: -d.Duration}
					}
					return d
				})),
		),
	}
}
