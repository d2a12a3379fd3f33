package rules

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func env(t testing.TB) *Env {
	t.Helper()
	e, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func scheduleChange(prevQty, newQty string, shift time.Duration) *pb.Event {
	start := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	return &pb.Event{Id: "e1", Type: "schedule.change", Plant: "DE-01", Payload: &pb.Event_ScheduleChange{ScheduleChange: &pb.ScheduleChange{
		Order: "PO-1", PreviousStart: timestamppb.New(start), NewStart: timestamppb.New(start.Add(shift)),
		PreviousQuantity: &pb.Quantity{Value: prevQty, Unit: "EA"}, NewQuantity: &pb.Quantity{Value: newQty, Unit: "EA"},
	}}}
}

func TestDecimalRules(t *testing.T) {
	e := env(t)
	ev := scheduleChange("100", "110.5", 0)
	for _, c := range []struct {
		expr string
		want bool
	}{
		{`decimal("0.1") + decimal("0.2") == decimal("0.3")`, true},
		{`decimal("1.50") == decimal("1.5")`, true},
		{`decimal("2") * decimal("0.45359237") == decimal("0.90718474")`, true},
		{`decimal("2.5").round(0) == decimal(3)`, true},
		{`decimal("10").div(decimal("3"), 2) == decimal("3.33")`, true},
		{`decimal("2.5").convert(decimal("0.45359237"), 3) == decimal("1.134")`, true},
		{`decimal("-3").abs() > decimal("2.99")`, true},
		{`-decimal("1") < decimal(0)`, true},
		{`decimal("1").compare(decimal("2")) == -1`, true},
		{`decimal("1").add(decimal("2")).sub(decimal("0.5")).mul(decimal("2")) == decimal(5)`, true},
		{`string(decimal("1.50")) == "1.50"`, true},
		{`decimal(event.schedule_change.new_quantity) >= decimal("110.5")`, true},
		{`(decimal(event.schedule_change.new_quantity) - decimal(event.schedule_change.previous_quantity)).abs() > decimal(event.schedule_change.previous_quantity) * decimal("0.10")`, true},
		{`(event.schedule_change.previous_start - event.schedule_change.new_start).abs() > duration("48h")`, false},
	} {
		p, err := e.Compile("t", c.expr, Bool)
		if err != nil {
			t.Fatalf("%s: %v", c.expr, err)
		}
		got, err := p.Bool(ev)
		if err != nil || got != c.want {
			t.Errorf("%s = %v, %v; want %v", c.expr, got, err, c.want)
		}
	}
	p, err := e.Compile("key", `"order:" + event.schedule_change.order`, String)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := p.String(ev); err != nil || s != "order:PO-1" {
		t.Fatalf("string rule = %q %v", s, err)
	}
}

func TestCompileErrorsNameTheRule(t *testing.T) {
	e := env(t)
	for _, c := range []struct {
		expr string
		out  Output
		want string
	}{
		{`evnt.type == "x"`, Bool, "rule r1: ERROR: <input>:1:1: undeclared reference to 'evnt'"},
		{`event.type`, Bool, "rule r1: yields string; want bool"},
		{`decimal("1") + 1`, Bool, "rule r1: ERROR"},
		{`event.schedule_change.new_quantity.value > 10.0`, Bool, "no matching overload"},
		{`(`, Bool, "Syntax error"},
		{` `, Bool, "empty expression"},
		{`event.plant == "x"`, String, "yields bool; want string"},
	} {
		_, err := e.Compile("r1", c.expr, c.out)
		if !errors.Is(err, ErrCompile) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: err = %v; want one line with %q", c.expr, err, c.want)
		}
	}
}

func TestEvalErrors(t *testing.T) {
	e := env(t)
	p, err := e.Compile("bad-decimal", `decimal(event.schedule_change.new_quantity) > decimal(0)`, Bool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Bool(scheduleChange("1", "1,5", 0)); !errors.Is(err, ErrEval) || !strings.Contains(err.Error(), "bad-decimal") {
		t.Fatalf("malformed decimal: %v", err)
	}
	p, _ = e.Compile("div", `decimal(1).div(decimal(0), 2) > decimal(0)`, Bool)
	if _, err := p.Bool(scheduleChange("1", "1", 0)); !errors.Is(err, ErrEval) {
		t.Fatalf("division by zero: %v", err)
	}
}

func BenchmarkRule(b *testing.B) {
	e := env(b)
	p, err := e.Compile("large", `(event.schedule_change.new_start - event.schedule_change.previous_start).abs() > duration("48h") || (decimal(event.schedule_change.new_quantity) - decimal(event.schedule_change.previous_quantity)).abs() > decimal(event.schedule_change.previous_quantity) * decimal("0.10")`, Bool)
	if err != nil {
		b.Fatal(err)
	}
	ev := scheduleChange("100", "105", time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Bool(ev); err != nil {
			b.Fatal(err)
		}
	}
}
