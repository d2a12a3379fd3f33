package pipeline

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/crosswalk"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/hub/schema"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.golden.json from the current output")

// testSet loads testdata's crosswalks into a store in a temp folder.
func testSet(t testing.TB) (*crosswalk.Set, *plan) {
	t.Helper()
	cfg := testConfig()
	dests := withAlerts(testDests())
	p, errs := compile(&cfg, dests, schema.New())
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	st, err := crosswalk.Open(crosswalk.Options{Path: filepath.Join(t.TempDir(), "cw.db"), Specs: TableSpecs(dests)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	for _, f := range cfg.CrosswalkFiles() {
		_, rows, hash, err := readCrosswalk(f, st.Specs())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Load(f.Table, f.Path, hash, rows); err != nil {
			t.Fatal(err)
		}
	}
	return st.Snapshot(), p
}

type goldenOutput struct {
	Destination    string            `json:"destination"`
	Action         string            `json:"action"`
	OrderingKey    string            `json:"ordering_key"`
	IdempotencyKey string            `json:"idempotency_key"`
	Hold           *goldenHold       `json:"hold,omitempty"`
	Rule           string            `json:"rule"`
	Crosswalks     map[string]uint64 `json:"crosswalks"`
	Document       json.RawMessage   `json:"document"`
}

type goldenHold struct {
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
}

type goldenException struct {
	Kind          string   `json:"kind"`
	Reason        string   `json:"reason"`
	FailedActions []string `json:"failed_actions,omitempty"`
}

type golden struct {
	Outputs   []goldenOutput   `json:"outputs"`
	Exception *goldenException `json:"exception,omitempty"`
}

// Every shipped workflow, from testdata/golden/NAME.event.json to the
// documents it yields (NAME.golden.json): unit conversion with exact
// decimals, rounding to the destination's decimals, outbound codes,
// ordering and idempotency keys, approval holds and exceptions.
func TestGoldenWorkflows(t *testing.T) {
	set, p := testSet(t)
	inputs, _ := filepath.Glob("testdata/golden/*.event.json")
	if len(inputs) < 15 {
		t.Fatalf("%d golden inputs", len(inputs))
	}
	covered := map[string]bool{}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".event.json")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var ev pb.Event
			if err := protojson.Unmarshal(raw, &ev); err != nil {
				t.Fatal(err)
			}
			encoded, _ := proto.Marshal(&ev)
			res := p.process(journal.Record{Position: 7, Producer: "agent:a1", EventID: ev.GetId(), Event: encoded}, set, clockAt, 0)
			got := golden{Outputs: []goldenOutput{}}
			for _, o := range res.outputs {
				g := goldenOutput{Destination: o.entry.Destination, Action: o.entry.Action, OrderingKey: o.entry.OrderingKey,
					IdempotencyKey: o.entry.IdempotencyKey, Rule: o.entry.Lineage.Rule, Crosswalks: o.entry.Lineage.Crosswalks, Document: o.entry.Document}
				if o.hold != nil {
					g.Hold = &goldenHold{Rule: o.hold.rule, Reason: o.hold.reason}
				}
				if o.entry.IdempotencyKey != idem(ev.GetId(), o.entry.Destination, o.entry.Action) {
					t.Errorf("idempotency key of %s is not derived from event id, destination and action", o.entry.Action)
				}
				if o.entry.Lineage.EventID != ev.GetId() || o.entry.Lineage.CorrelationID != ev.GetCorrelationId() || o.entry.Lineage.JournalPosition != 7 {
					t.Errorf("lineage %+v", o.entry.Lineage)
				}
				got.Outputs = append(got.Outputs, g)
				covered[ev.GetType()+"/"+o.entry.Action+"@"+o.entry.Destination] = true
			}
			if res.exc != nil {
				got.Exception = &goldenException{Kind: res.exc.Kind, Reason: res.exc.Reason, FailedActions: res.exc.FailedActions}
				if !bytes.Equal(res.exc.Event, encoded) {
					t.Error("exception does not keep the event bytes for replay")
				}
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(got); err != nil {
				t.Fatal(err)
			}
			out := buf.Bytes()
			path := filepath.Join("testdata", "golden", name+".golden.json")
			if *update {
				if err := os.WriteFile(path, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("%s differs (go test -run TestGoldenWorkflows -update rewrites it; review the diff):\n%s", path, out)
			}
		})
	}
	// Every step of every shipped workflow appears in some golden file.
	for _, w := range NewDefaultConfig().Workflows {
		for _, a := range w.Actions {
			if k := w.Event + "/" + a.Action + "@" + a.Destination; !covered[k] {
				t.Errorf("no golden test covers %s", k)
			}
		}
	}
}

func idem(eventID, dest, action string) string {
	return outbox.IdempotencyKey(eventID, dest, action)
}
