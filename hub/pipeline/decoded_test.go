package pipeline

import (
	"testing"

	"google.golang.org/protobuf/proto"
)

// Events handed over decoded give exactly what the same events decoded
// from the journal give: every outbox entry of every destination, and
// every exception.
func TestDecodedHandOverGivesTheSameResults(t *testing.T) {
	evs := benchEvents(60)
	evs = append(evs, shortage("x-1", "P-8000", "5"), completion("x-2", "PO-1", "P-4711", "0"))
	from, handed := newEnv(t, testConfig()), newEnv(t, testConfig())
	from.waitCursor(from.journalEvents(evs...))
	last, decoded := handed.journalBatch(evs, true)
	handed.waitCursor(last)
	// The pipeline worked on the handed-over events themselves
	// (canonicalizing changes them), not on copies decoded again.
	changed := 0
	for i := range evs {
		if !proto.Equal(evs[i], decoded[i]) {
			changed++
		}
	}
	if changed == 0 {
		t.Fatal("no handed-over event was canonicalized: the pipeline decoded the journal again")
	}
	for _, d := range append(testDests(), Destination{Name: "alerts"}) {
		a, b := allEntries(t, from.p, d.Name), allEntries(t, handed.p, d.Name)
		if len(a) != len(b) {
			t.Fatalf("%s: %d entries from the journal, %d handed over", d.Name, len(a), len(b))
		}
		for i := range a {
			if a[i].IdempotencyKey != b[i].IdempotencyKey || string(a[i].Document) != string(b[i].Document) || a[i].Lineage.Plant != b[i].Lineage.Plant {
				t.Errorf("%s entry %d differs:\n journal %s %s\n handed  %s %s", d.Name, i, a[i].IdempotencyKey, a[i].Document, b[i].IdempotencyKey, b[i].Document)
			}
		}
	}
	xa, _ := from.p.Exceptions().List(exceptionsAll())
	xb, _ := handed.p.Exceptions().List(exceptionsAll())
	if len(xa) != 2 || len(xb) != len(xa) {
		t.Fatalf("exceptions: %d from the journal, %d handed over; want 2 each", len(xa), len(xb))
	}
	for i := range xa {
		if xa[i].Kind != xb[i].Kind || xa[i].Reason != xb[i].Reason || string(xa[i].Event) != string(xb[i].Event) {
			t.Errorf("exception %d differs: %s %q / %s %q", i, xa[i].Kind, xa[i].Reason, xb[i].Kind, xb[i].Reason)
		}
	}
}
