package schema

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func loadFixture(t *testing.T, path string) *pb.Event {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ev pb.Event
	if err := protojson.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &ev
}

// Every v1 fixture validates under the current schemas: a hub that gains
// schema versions keeps accepting what v1 agents send.
func TestGoldenV1FixturesValidate(t *testing.T) {
	r := New()
	files, _ := filepath.Glob("testdata/v1/*.json")
	seen := map[string]bool{}
	for _, f := range files {
		ev := loadFixture(t, f)
		if _, err := r.Validate(ev); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		seen[ev.GetType()] = true
	}
	for _, typ := range r.Types() {
		if !seen[typ.Name] {
			t.Errorf("no v1 fixture for %s in testdata/v1", typ.Name)
		}
	}
}

// The wire contract's own v1 fixture (one event of every payload type, as
// a v1 agent sent them) validates too.
func TestWireFixtureV1Validates(t *testing.T) {
	raw, err := os.ReadFile("../../proto/plantsync/v1/testdata/v1/agent_message_1.bin")
	if err != nil {
		t.Fatal(err)
	}
	var msg pb.AgentMessage
	if err := proto.Unmarshal(raw, &msg); err != nil {
		t.Fatal(err)
	}
	r := New()
	n := 0
	for _, b := range msg.GetBatch().GetEvents() {
		var ev pb.Event
		if err := proto.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Validate(&ev); err != nil {
			t.Errorf("%s: %v", ev.GetType(), err)
		}
		n++
	}
	if n != 14 {
		t.Fatalf("fixture has %d events, want 14", n)
	}
}

func TestValidateViolations(t *testing.T) {
	r := New()
	for _, c := range []struct {
		name   string
		mutate func(*pb.Event)
		want   []string
		is     error
	}{
		{"unknown type", func(e *pb.Event) { e.Type = "coffee.brewed" }, []string{`unknown event type "coffee.brewed"`}, ErrUnknownType},
		{"newer version", func(e *pb.Event) { e.SchemaVersion = 2 }, []string{"version 2", "upgrade the hub"}, ErrVersion},
		{"missing plant and time", func(e *pb.Event) { e.Plant = ""; e.OccurredAt = nil }, []string{"plant: missing", "occurred_at: missing"}, ErrInvalid},
		{"wrong payload", func(e *pb.Event) {
			e.Payload = &pb.Event_MachineState{MachineState: &pb.MachineState{Machine: "M"}}
		}, []string{"production_completion: missing"}, ErrInvalid},
		{"bad quantity", func(e *pb.Event) {
			pc := e.GetProductionCompletion()
			pc.Good = &pb.Quantity{Value: "1,5", Unit: ""}
			pc.Scrap = &pb.Quantity{Value: "-1", Unit: "EA"}
			pc.Item = " "
		}, []string{`good.value: "1,5" is not a decimal`, "good.unit: blank", `scrap.value: "-1" is negative`, "item: blank"}, ErrInvalid},
		{"version 0 reads as 1", func(e *pb.Event) { e.SchemaVersion = 0 }, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev := loadFixture(t, "testdata/v1/production.completion.json")
			c.mutate(ev)
			_, err := r.Validate(ev)
			if c.is == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, c.is) {
				t.Fatalf("err = %v, want %v", err, c.is)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	ev := loadFixture(t, "testdata/v1/po.approved.json")
	ev.GetPoApproved().Lines = nil
	if _, err := r.Validate(ev); err == nil || !strings.Contains(err.Error(), "lines: has 0 entries; want at least 1") {
		t.Fatalf("empty lines: %v", err)
	}
	ev = loadFixture(t, "testdata/v1/observation.json")
	ev.GetObservation().Value = nil
	if _, err := r.Validate(ev); err == nil || !strings.Contains(err.Error(), "observation.value: missing; set one of") {
		t.Fatalf("observation without value: %v", err)
	}
}

var update = flag.Bool("update", false, "rewrite docs/events.md")

// docs/events.md is generated from the registry.
func TestEventsDocMatchesSchemas(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "events.md")
	got := New().Markdown()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("docs/events.md is out of date: go test ./hub/schema -run TestEventsDoc -update")
	}
}
