package pipeline

import (
	"fmt"
	"sort"
	"strings"

	"github.com/plantsync/plantsync/hub/alerts"
	"github.com/plantsync/plantsync/hub/rules"
	"github.com/plantsync/plantsync/hub/schema"
)

// plan is a compiled pipeline config.
type plan struct {
	schemas   *schema.Registry
	workflows map[string][]*step // by event type
	rules     map[string][]*rules.Program
	allRules  []*rules.Program // rules for every type
	ruleMsg   map[*rules.Program]string
}

// step is one compiled workflow action.
type step struct {
	name        string // event/action@destination, recorded in lineage
	def         *actionDef
	destination string
	when        *rules.Program
	orderingKey *rules.Program
	holds       []hold
}

type hold struct {
	prg    *rules.Program
	reason string
}

func newSchemas() *schema.Registry { return schema.New() }

// compile type-checks every rule and workflow step. Errors name the field
// path below `pipeline`.
func compile(c *Config, dests []Destination, reg *schema.Registry) (*plan, []error) {
	env, err := rules.NewEnv()
	if err != nil {
		return nil, []error{err}
	}
	p := &plan{schemas: reg, workflows: map[string][]*step{}, rules: map[string][]*rules.Program{}, ruleMsg: map[*rules.Program]string{}}
	var errs []error
	defs := actionDefs()
	byName := map[string]Destination{}
	for _, d := range dests {
		byName[d.Name] = d
	}
	known := func(typ string) error {
		if _, ok := reg.Lookup(typ); !ok {
			var names []string
			for _, t := range reg.Types() {
				names = append(names, t.Name)
			}
			return fmt.Errorf("%q is not an event type; want one of %s", typ, strings.Join(names, ", "))
		}
		return nil
	}
	seenRule := map[string]bool{}
	for i, r := range c.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: empty; name the rule (exceptions and logs cite it)", path))
			continue
		}
		if seenRule[r.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", path, r.Name))
		}
		seenRule[r.Name] = true
		if r.Event != "*" {
			if err := known(r.Event); err != nil {
				errs = append(errs, fmt.Errorf("%s.event: %v, or * for every type", path, err))
				continue
			}
		}
		prg, err := env.Compile(r.Name, r.Expr, rules.Bool)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.expr: %w", path, err))
			continue
		}
		p.ruleMsg[prg] = r.Message
		if r.Event == "*" {
			p.allRules = append(p.allRules, prg)
		} else {
			p.rules[r.Event] = append(p.rules[r.Event], prg)
		}
	}
	seenEvent := map[string]int{}
	for i, w := range c.Workflows {
		path := fmt.Sprintf("workflows[%d]", i)
		if err := known(w.Event); err != nil {
			errs = append(errs, fmt.Errorf("%s.event: %v", path, err))
			continue
		}
		if j, dup := seenEvent[w.Event]; dup {
			errs = append(errs, fmt.Errorf("%s.event: %s already has a workflow (workflows[%d]); list all its actions there", path, w.Event, j))
			continue
		}
		seenEvent[w.Event] = i
		seenStep := map[string]bool{}
		for j, a := range w.Actions {
			ap := fmt.Sprintf("%s.actions[%d]", path, j)
			name := fmt.Sprintf("%s/%s@%s", w.Event, a.Action, a.Destination)
			def, ok := defs[a.Action]
			if !ok {
				errs = append(errs, fmt.Errorf("%s.action: %q is not an action; want one of %s", ap, a.Action, strings.Join(Actions(), ", ")))
				continue
			}
			if !def.accepts(w.Event) {
				errs = append(errs, fmt.Errorf("%s.action: %s cannot be built from %s events; it takes %s", ap, a.Action, w.Event, strings.Join(def.events, ", ")))
				continue
			}
			d, ok := byName[a.Destination]
			switch {
			case !ok:
				var names []string
				for n := range byName {
					names = append(names, n)
				}
				sort.Strings(names)
				errs = append(errs, fmt.Errorf("%s.destination: %q is not declared; declare it under destinations or use one of %s", ap, a.Destination, strings.Join(names, ", ")))
				continue
			case !d.supports(a.Action):
				errs = append(errs, fmt.Errorf("%s.destination: %s (type %s) does not perform %s; it performs %s", ap, d.Name, d.Type, a.Action, strings.Join(d.Actions, ", ")))
				continue
			}
			if seenStep[a.Action+"\x00"+a.Destination] {
				// Both would share one idempotency key.
				errs = append(errs, fmt.Errorf("%s: %s to %s is listed twice for %s", ap, a.Action, a.Destination, w.Event))
				continue
			}
			seenStep[a.Action+"\x00"+a.Destination] = true
			st := &step{name: name, def: def, destination: a.Destination}
			if a.When != "" {
				if st.when, err = env.Compile(name+" when", a.When, rules.Bool); err != nil {
					errs = append(errs, fmt.Errorf("%s.when: %w", ap, err))
				}
			}
			if a.OrderingKey != "" {
				if st.orderingKey, err = env.Compile(name+" ordering_key", a.OrderingKey, rules.String); err != nil {
					errs = append(errs, fmt.Errorf("%s.ordering_key: %w", ap, err))
				}
			}
			if len(a.Hold) > 0 && a.Destination == alerts.Destination {
				errs = append(errs, fmt.Errorf("%s.hold: alerts are never held for approval; remove it", ap))
			}
			for k, h := range a.Hold {
				hp := fmt.Sprintf("%s.hold[%d]", ap, k)
				if h.Name == "" {
					errs = append(errs, fmt.Errorf("%s.name: empty; name the threshold (approvals cite it)", hp))
					continue
				}
				prg, err := env.Compile(h.Name, h.When, rules.Bool)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s.when: %w", hp, err))
					continue
				}
				st.holds = append(st.holds, hold{prg: prg, reason: h.Reason})
			}
			p.workflows[w.Event] = append(p.workflows[w.Event], st)
		}
	}
	return p, errs
}
