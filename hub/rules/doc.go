// Package rules compiles the hub's validation, routing and approval rules,
// written in CEL (cel.dev/cel-go), against the canonical event
// (plantsync.v1.Event after the inbound crosswalks). Rules are compiled and
// type-checked when the config loads, so a bad expression is a config error
// naming the rule, never a runtime surprise.
//
// Rules see one variable, `event`. Quantities are decimal strings; the
// decimal type and its functions keep arithmetic exact:
//
//	decimal("1.5"), decimal(event.material_shortage.quantity)   convert to decimal
//	a + b, a - b, a * b, -a, a < b, a <= b, a > b, a >= b, a == b
//	a.add(b), a.sub(b), a.mul(b), a.div(b, scale), a.compare(b) (-1, 0, 1)
//	a.abs(), a.round(scale), a.convert(factor, scale), string(a)
//	(t2 - t1).abs()                                            absolute duration
//
// Data path: canonicalize ─▶ rules (validate, route, hold) ─▶ outbox.
package rules
