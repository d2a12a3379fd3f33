package pipeline

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/crosswalk"
	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/hub/rules"
	"github.com/plantsync/plantsync/hub/schema"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// output is one action an event yields.
type output struct {
	entry outbox.Entry
	value []byte // outbox.Encode of entry
	hold  *holdHit
}

type holdHit struct{ rule, reason string }

// result is everything one event yields; commit writes it.
type result struct {
	pos     uint64
	corr    string
	outputs []output
	exc     *exceptions.Exception
}

// failure is one reason an event (or one of its steps) could not go on.
type failure struct {
	kind, reason, step string
}

// process runs one journaled event through the pipeline with the crosswalk
// snapshot set, without touching storage. It never fails: what cannot go
// on becomes the result's exception.
func (p *plan) process(rec journal.Record, set *crosswalk.Set, now time.Time, replayOf uint64) result {
	res := result{pos: rec.Position}
	lin := outbox.Lineage{EventID: rec.EventID, Producer: rec.Producer, JournalPosition: rec.Position, ProcessedAt: now, ReplayOf: replayOf}
	var fails []failure
	park := func() result {
		e := &exceptions.Exception{Kind: fails[0].kind, CreatedAt: now, Plant: lin.Plant, EventType: lin.EventType, EventID: lin.EventID,
			CorrelationID: lin.CorrelationID, Position: rec.Position, Producer: rec.Producer, Event: rec.Event, Lineage: lin}
		var reasons []string
		for _, f := range fails {
			reasons = append(reasons, f.reason)
			if f.step != "" {
				e.FailedActions = append(e.FailedActions, f.step)
			}
		}
		e.Reason = strings.Join(reasons, "; ")
		res.exc = e
		return res
	}

	ev, err := decodeEvent(rec)
	if err != nil {
		fails = append(fails, failure{kind: exceptions.KindUndecodable, reason: fmt.Sprintf("cannot decode the event (%d bytes): %v", len(rec.Event), err)})
		res.corr = rec.EventID
		return park()
	}
	if ev.GetId() != "" {
		lin.EventID = ev.GetId()
	}
	lin.CorrelationID, lin.EventType, lin.Plant = correlationID(ev), ev.GetType(), ev.GetPlant()
	if lin.CorrelationID == "" {
		lin.CorrelationID = rec.EventID
	}
	res.corr = lin.CorrelationID

	t, err := p.schemas.Validate(ev)
	switch {
	case errors.Is(err, schema.ErrUnknownType):
		fails = append(fails, failure{kind: exceptions.KindUnknownType, reason: err.Error()})
		return park()
	case errors.Is(err, schema.ErrVersion):
		fails = append(fails, failure{kind: exceptions.KindSchemaVersion, reason: err.Error()})
		return park()
	case err != nil && !t.Operational:
		fails = append(fails, failure{kind: exceptions.KindValidation, reason: err.Error()})
		return park()
	}
	if t.Operational {
		// Reports on plantsync itself always reach exceptions and alerts,
		// even when malformed.
		reason := operationalReason(ev)
		if err != nil {
			reason += " (malformed report: " + err.Error() + ")"
		}
		kind := exceptions.KindSourceError
		if t.Name == "buffer.overflow" {
			kind = exceptions.KindBufferOverflow
		}
		fails = append(fails, failure{kind: kind, reason: reason})
	}

	used := map[string]uint64{}
	if err := Canonicalize(ev, t, p.schemas, set, now, used); err != nil {
		lin.Crosswalks = used
		if !t.Operational {
			fails = append(fails, mappingFailures(err, "")...)
			return park()
		}
		fails[0].reason += "; " + err.Error()
	}
	lin.Crosswalks = used

	if !t.Operational {
		for _, group := range [][]*rules.Program{p.rules[t.Name], p.allRules} {
			for _, prg := range group {
				ok, err := prg.Bool(ev)
				switch {
				case err != nil:
					fails = append(fails, failure{kind: exceptions.KindRuleError, reason: err.Error()})
				case !ok:
					fails = append(fails, failure{kind: exceptions.KindRule, reason: fmt.Sprintf("rule %s: %s", prg.Name, p.ruleMsg[prg])})
				}
			}
		}
		if len(fails) > 0 {
			return park()
		}
	}

	for _, st := range p.workflows[t.Name] {
		out, f := p.build(st, ev, set, now, lin)
		if f != nil {
			fails = append(fails, *f)
			continue
		}
		if out != nil {
			res.outputs = append(res.outputs, *out)
		}
	}
	if len(fails) > 0 {
		return park()
	}
	return res
}

// decodeEvent decodes rec.Event, unless the journal handed it over decoded.
func decodeEvent(rec journal.Record) (*pb.Event, error) {
	if rec.Decoded != nil {
		return rec.Decoded, nil
	}
	ev := &pb.Event{}
	return ev, proto.Unmarshal(rec.Event, ev)
}

func mappingFailures(err error, step string) []failure {
	var out []failure
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		kind := exceptions.KindConversion
		var ue *UnmappedError
		if errors.As(e, &ue) {
			kind = exceptions.KindUnmappedPrefix + string(ue.Kind)
		}
		out = append(out, failure{kind: kind, reason: e.Error(), step: step})
	}
	return out
}

// build makes one step's outbox entry; nil output when `when` skips it.
func (p *plan) build(st *step, ev *pb.Event, set *crosswalk.Set, now time.Time, lin outbox.Lineage) (*output, *failure) {
	if st.when != nil {
		ok, err := st.when.Bool(ev)
		if err != nil {
			return nil, &failure{kind: exceptions.KindRuleError, reason: err.Error(), step: st.name}
		}
		if !ok {
			return nil, nil
		}
	}
	b := &builder{ev: ev, dest: st.destination, set: set, at: now, used: maps.Clone(lin.Crosswalks), plant: ev.GetPlant()}
	if b.used == nil {
		b.used = map[string]uint64{}
	}
	doc, okey := st.def.build(b)
	if len(b.errs) > 0 {
		fs := mappingFailures(errors.Join(b.errs...), st.name)
		return nil, &fs[0]
	}
	if st.orderingKey != nil {
		k, err := st.orderingKey.String(ev)
		if err != nil {
			return nil, &failure{kind: exceptions.KindRuleError, reason: err.Error(), step: st.name}
		}
		okey = k
	}
	if strings.ContainsRune(okey, 0) || okey == "" {
		return nil, &failure{kind: exceptions.KindRuleError, reason: fmt.Sprintf("ordering key %q of %s is empty or holds a NUL byte", okey, st.name), step: st.name}
	}
	raw, err := marshalDoc(doc)
	if err != nil {
		return nil, &failure{kind: exceptions.KindConversion, reason: fmt.Sprintf("encode the %s document: %v", st.def.name, err), step: st.name}
	}
	lin.Rule, lin.Crosswalks = st.name, b.used
	out := &output{entry: outbox.Entry{
		Destination: st.destination, IdempotencyKey: outbox.IdempotencyKey(ev.GetId(), st.destination, st.def.name),
		Action: st.def.name, OrderingKey: okey, Document: raw, CreatedAt: now, State: outbox.StatePending, Lineage: lin,
	}}
	for _, h := range st.holds {
		hit, err := h.prg.Bool(ev)
		if err != nil {
			return nil, &failure{kind: exceptions.KindRuleError, reason: err.Error(), step: st.name}
		}
		if hit {
			out.hold = &holdHit{rule: h.prg.Name, reason: h.reason}
			break
		}
	}
	if out.value, err = outbox.Encode(&out.entry); err != nil {
		return nil, &failure{kind: exceptions.KindConversion, reason: err.Error(), step: st.name}
	}
	return out, nil
}

// droppedSummary counts the events a buffer.overflow report says were
// dropped and lists its sequence ranges ("4-9, 12-12").
func droppedSummary(bo *pb.BufferOverflow) (n uint64, ranges string) {
	var rs []string
	for _, r := range bo.GetDropped() {
		if r.GetLast() >= r.GetFirst() {
			n += r.GetLast() - r.GetFirst() + 1
		}
		rs = append(rs, fmt.Sprintf("%d-%d", r.GetFirst(), r.GetLast()))
	}
	return n, strings.Join(rs, ", ")
}

func operationalReason(ev *pb.Event) string {
	switch p := ev.GetPayload().(type) {
	case *pb.Event_BufferOverflow:
		n, ranges := droppedSummary(p.BufferOverflow)
		return fmt.Sprintf("agent buffer overflow at plant %q: %d events dropped (sequences %s, policy %s)", ev.GetPlant(), n, ranges, p.BufferOverflow.GetPolicy())
	case *pb.Event_SourceError:
		return fmt.Sprintf("source %q at plant %q could not read a payload: %s (%s)", ev.GetSource().GetName(), ev.GetPlant(), p.SourceError.GetReason(), p.SourceError.GetLocation())
	}
	return ev.GetType() + " report"
}
