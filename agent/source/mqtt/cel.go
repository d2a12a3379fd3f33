package mqtt

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// CEL expressions (fields[*].cel and drop_if) see:
//
//	doc       the decoded payload; JSON numbers are int or double
//	raw       the same document with every number as its literal text,
//	          for exact decimal arithmetic with dec_add/dec_sub/dec_mul
//	topic     the message's topic
//	captures  the named topic levels, map(string, string)
//
// Decimal fields never take a double: a CEL result for a quantity must be
// text or an integer.

// celCostLimit stops an expression that loops over a huge document.
const celCostLimit = 1_000_000

// errCELDouble explains why a double cannot become a decimal field.
var errCELDouble = errors.New("is a floating-point number; decimal fields take text or integers (floats lose exactness): compute with dec_add/dec_sub/dec_mul over raw.<field>")

// sharedCELEnv is built once: the environment never changes, and every
// subscription is compiled at validation and again at start. A cel.Env is
// safe for concurrent use.
var sharedCELEnv = sync.OnceValues(newCELEnv)

func newCELEnv() (*cel.Env, error) {
	decimalBinary := func(op string) cel.EnvOption {
		return cel.Function("dec_"+op, cel.Overload("dec_"+op+"_dyn_dyn", []*cel.Type{cel.DynType, cel.DynType}, cel.StringType,
			cel.BinaryBinding(func(a, b ref.Val) ref.Val {
				x, err := celDecimalText(a)
				if err != nil {
					return types.NewErr("dec_%s: %v", op, err)
				}
				y, err := celDecimalText(b)
				if err != nil {
					return types.NewErr("dec_%s: %v", op, err)
				}
				r, err := decimalArith(op, x, y)
				if err != nil {
					return types.NewErr("dec_%s: %v", op, err)
				}
				return types.String(r)
			})))
	}
	return cel.NewEnv(
		cel.Variable("doc", cel.DynType),
		cel.Variable("raw", cel.DynType),
		cel.Variable("topic", cel.StringType),
		cel.Variable("captures", cel.MapType(cel.StringType, cel.StringType)),
		decimalBinary("add"), decimalBinary("sub"), decimalBinary("mul"),
		cel.Function("dec", cel.Overload("dec_dyn", []*cel.Type{cel.DynType}, cel.StringType,
			cel.UnaryBinding(func(a ref.Val) ref.Val {
				x, err := celDecimalText(a)
				if err != nil {
					return types.NewErr("dec: %v", err)
				}
				s, err := normalizeDecimal(x)
				if err != nil {
					return types.NewErr("dec: %v", err)
				}
				return types.String(s)
			}))),
	)
}

func celDecimalText(v ref.Val) (string, error) {
	switch x := v.(type) {
	case types.String:
		return string(x), nil
	case types.Int:
		return fmt.Sprint(int64(x)), nil
	case types.Uint:
		return fmt.Sprint(uint64(x)), nil
	case types.Double:
		return "", errors.New("argument " + errCELDouble.Error())
	}
	return "", fmt.Errorf("argument of type %s is not a decimal", v.Type().TypeName())
}

// celProgram is one compiled expression.
type celProgram struct {
	prg     cel.Program
	usesRaw bool
}

func compileCEL(env *cel.Env, expr string, wantBool bool) (*celProgram, error) {
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	if wantBool && !ast.OutputType().IsExactType(cel.BoolType) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, fmt.Errorf("must be true or false, but is %s", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(celCostLimit))
	if err != nil {
		return nil, err
	}
	p := &celProgram{prg: prg}
	for _, r := range ast.NativeRep().ReferenceMap() {
		if r.Name == "raw" {
			p.usesRaw = true
		}
	}
	return p, nil
}

// celInput is the activation of one message, built once per message.
type celInput struct {
	vars map[string]any
}

func newCELInput(doc any, topic string, caps map[string]string, withRaw bool) *celInput {
	if caps == nil {
		caps = map[string]string{}
	}
	in := &celInput{vars: map[string]any{"doc": doc, "topic": topic, "captures": caps}}
	if withRaw {
		in.vars["raw"] = rawNumbers(doc)
	} else {
		in.vars["raw"] = doc
	}
	return in
}

// rawNumbers copies doc with every json.Number as its text.
func rawNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		return string(x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = rawNumbers(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = rawNumbers(e)
		}
		return out
	}
	return v
}

// eval runs p and returns its result as a Go value (string, int64, uint64,
// float64, bool, time.Time, nil, or lists and maps of them).
func (p *celProgram) eval(in *celInput) (any, error) {
	out, _, err := p.prg.Eval(in.vars)
	if err != nil {
		return nil, err
	}
	if _, isNull := out.(types.Null); isNull {
		return nil, nil
	}
	return out.Value(), nil
}
