package mqtt

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// recordingSink commits at once and keeps what it was given.
type recordingSink struct {
	mu     sync.Mutex
	events []*pb.Event
	state  []buffer.StateWrite
	fail   error
}

func (r *recordingSink) AppendAsync(ctx context.Context, events []*pb.Event, done buffer.Done) error {
	return r.AppendWithState(ctx, events, nil, done)
}

func (r *recordingSink) AppendWithState(_ context.Context, events []*pb.Event, state []buffer.StateWrite, done buffer.Done) error {
	r.mu.Lock()
	if r.fail == nil {
		r.events = append(r.events, events...)
		r.state = append(r.state, state...)
	}
	err := r.fail
	r.mu.Unlock()
	done(1, uint64(len(events)), err)
	return nil
}

func (r *recordingSink) ReadState(string, func(k, v []byte) error) error { return nil }
func (r *recordingSink) Stats() buffer.Stats                             { return buffer.Stats{} }

func (r *recordingSink) take() []*pb.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

// offlineSource is a source that is not connected: tests feed it messages
// through handle directly.
func offlineSource(t testing.TB, cfg *Config, sink source.Sink) *Source {
	t.Helper()
	if cfg.Name == "" {
		cfg.Common = source.Common{Name: "mes", Type: "mqtt"}
	}
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = []string{"tcp://127.0.0.1:1"}
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "plantsync-test"
	}
	s, err := New(cfg, source.Env{Name: cfg.Name, Plant: testPlant, StateDir: t.TempDir(), Sink: sink, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	q, err := openQuarantine(s.env.StateDir, cfg.QuarantineMaxEntries)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.close() })
	s.q = q
	s.ctx = context.Background()
	return s
}

// handleSync runs one message through the source and returns the result.
func handleSync(t testing.TB, s *Source, topic string, payload []byte, received time.Time) result {
	t.Helper()
	ch := make(chan result, 1)
	s.handle(inMsg{topic: topic, payload: payload, qos: 1, received: received}, false, func(r result) { ch <- r })
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("handle did not finish")
	}
	return result{}
}

// mappingCase is testdata/mapping/NAME.yaml; NAME.in is the payload and
// NAME.out.json what the source makes of it.
type mappingCase struct {
	About        string       `yaml:"about"`
	Topic        string       `yaml:"topic"`
	Subscription Subscription `yaml:"subscription"`
}

var goldenReceived = time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)

func TestJSONMappingGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "mapping", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases in testdata/mapping (%v)", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var c mappingCase
			dec := yaml.NewDecoder(strings.NewReader(string(raw)))
			dec.KnownFields(true)
			if err := dec.Decode(&c); err != nil {
				t.Fatal(err)
			}
			payload, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".in")
			if err != nil {
				t.Fatal(err)
			}
			cfg := NewDefaultConfig()
			cfg.Subscriptions = []Subscription{c.Subscription}
			sink := &recordingSink{}
			s := offlineSource(t, cfg, sink)
			r := handleSync(t, s, c.Topic, payload, goldenReceived)
			got := goldenOutput(t, r, sink.take(), c.Subscription.ContentHash)
			goldenPath := strings.TrimSuffix(f, ".yaml") + ".out.json"
			if *update {
				b, _ := json.MarshalIndent(got, "", "  ")
				if err := os.WriteFile(goldenPath, append(b, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			wantRaw, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("%v (run go test -run TestJSONMappingGolden -update to create it)", err)
			}
			var want any
			if err := json.Unmarshal(wantRaw, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normalizeJSON(t, got), want) {
				b, _ := json.MarshalIndent(got, "", "  ")
				t.Errorf("%s: got\n%s\nwant\n%s", c.About, b, wantRaw)
			}
		})
	}
}

// goldenOutput is the comparable form of a result and its events.
func goldenOutput(t testing.TB, r result, events []*pb.Event, contentHash bool) map[string]any {
	t.Helper()
	out := map[string]any{"result": r.kind}
	if r.err != nil {
		out["error"] = r.err.Error()
	}
	var evs []any
	for _, ev := range events {
		b, err := protojson.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "observedAt")
		if contentHash && m["type"] != "source.error" {
			m["id"], m["correlationId"] = "<new uuidv7>", "<new uuidv7>"
		}
		evs = append(evs, m)
	}
	if len(evs) > 0 {
		out["events"] = evs
	}
	return out
}

func normalizeJSON(t testing.TB, v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
