package rules

import (
	"errors"
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/interpreter"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// ErrCompile marks a rule that does not parse or type-check.
var ErrCompile = errors.New("rule does not compile")

// ErrEval marks a rule that failed while evaluating an event (e.g. a
// malformed decimal); the pipeline parks the event as an exception.
var ErrEval = errors.New("rule evaluation failed")

// costLimit bounds the work of one evaluation so a rule looping over a
// huge list cannot stall the pipeline.
const costLimit = 1_000_000

// Output is what a rule yields.
type Output int

// Outputs.
const (
	Bool Output = iota + 1
	String
)

func (o Output) celType() *cel.Type {
	if o == String {
		return cel.StringType
	}
	return cel.BoolType
}

// Env compiles rules. It is safe for concurrent use.
type Env struct {
	env *cel.Env
}

// NewEnv builds the CEL environment: the canonical event as `event` and
// the decimal library.
func NewEnv() (*Env, error) {
	opts := append([]cel.EnvOption{
		cel.Types(&pb.Event{}),
		cel.Variable("event", cel.ObjectType("plantsync.v1.Event")),
	}, decimalLib()...)
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("rules environment: %w", err)
	}
	return &Env{env: env}, nil
}

// Program is one compiled rule. It is safe for concurrent use.
type Program struct {
	Name string
	Expr string
	out  Output
	prg  cel.Program
}

// Compile parses and type-checks expr, which must yield out. Errors wrap
// ErrCompile and name the rule.
func (e *Env) Compile(name, expr string, out Output) (*Program, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, fmt.Errorf("%w: rule %s: empty expression", ErrCompile, name)
	}
	ast, iss := e.env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("%w: rule %s: %s", ErrCompile, name, oneLine(iss.Err().Error()))
	}
	if !ast.OutputType().IsExactType(out.celType()) {
		return nil, fmt.Errorf("%w: rule %s: yields %s; want %s", ErrCompile, name, ast.OutputType(), out.celType())
	}
	prg, err := e.env.Program(ast, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("%w: rule %s: %v", ErrCompile, name, err)
	}
	return &Program{Name: name, Expr: expr, out: out, prg: prg}, nil
}

// oneLine folds CEL's multi-line messages (with a caret under the column)
// into one line for config error lists.
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(l); t != "" && strings.Trim(t, "|.^ ") != "" {
			parts = append(parts, t)
		}
	}
	return strings.Join(parts, " ")
}

// eventActivation binds `event` without allocating a map per evaluation.
type eventActivation struct{ ev *pb.Event }

func (a eventActivation) ResolveName(name string) (any, bool) {
	if name == "event" {
		return a.ev, true
	}
	return nil, false
}

func (a eventActivation) Parent() interpreter.Activation { return nil }

func (p *Program) eval(ev *pb.Event) (any, error) {
	v, _, err := p.prg.Eval(eventActivation{ev})
	if err != nil {
		return nil, fmt.Errorf("%w: rule %s: %v", ErrEval, p.Name, err)
	}
	return v.Value(), nil
}

// Bool evaluates a boolean rule.
func (p *Program) Bool(ev *pb.Event) (bool, error) {
	v, err := p.eval(ev)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%w: rule %s: yielded %T, want bool", ErrEval, p.Name, v)
	}
	return b, nil
}

// String evaluates a string rule.
func (p *Program) String(ev *pb.Event) (string, error) {
	v, err := p.eval(ev)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%w: rule %s: yielded %T, want string", ErrEval, p.Name, v)
	}
	return s, nil
}
