package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"
	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// The test binary doubles as the plugin binaries of these tests
// (sdktest.SelfPlugin): a destination, a source, and a destination that
// speaks a future protocol version.
func TestMain(m *testing.M) {
	if sdktest.RunPluginRole(map[string]func(){
		"dest":   func() { sdk.ServeDestination(&testDest{log: sdk.NewLogger()}) },
		"source": func() { sdk.ServeSource(&testSource{}) },
		"v2": func() {
			hs := sdk.Handshake
			hs.ProtocolVersion = sdk.ProtocolVersion + 1
			plugin.Serve(&plugin.ServeConfig{HandshakeConfig: hs, Plugins: plugin.PluginSet{}, GRPCServer: plugin.DefaultGRPCServer})
		},
	}) {
		return
	}
	goleak.VerifyTestMain(m)
}

// testDest stores documents as files named by idempotency key in cfg.dir.
// Action "hang" writes the process id to dir/pid and blocks, so that a
// test can kill the process mid-Deliver; action "slow" blocks until the
// call's deadline and makes Health do the same from then on (a target that
// has become slow: connectors check their target in Health); action
// "echo-password" answers with its password in the message.
type testDest struct {
	log      *slog.Logger
	dir      string
	password string
	slow     atomic.Bool
}

type testDestConfig struct {
	Dir      string `json:"dir"`
	Password string `json:"password"`
}

func (d *testDest) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ConfigureResponse, error) {
	var cfg testDestConfig
	if err := req.Decode(&cfg); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	if cfg.Dir == "" {
		return sdk.ConfigureResponse{}, errors.New("dir: required")
	}
	d.dir, d.password = cfg.Dir, cfg.Password
	// A careless connector: logs its own password, in several forms.
	d.log.Info("connecting to the target with password "+cfg.Password, "password", cfg.Password, "auth", map[string]string{"pw": cfg.Password})
	return sdk.ConfigureResponse{Actions: []string{"store", "hang", "slow", "echo-password"}, Capabilities: []sdk.Capability{sdk.CapabilityLookup}, Version: "test"}, nil
}

func (d *testDest) Deliver(ctx context.Context, req sdk.DeliverRequest) (sdk.DeliverResponse, error) {
	switch req.Action {
	case "store":
		if err := os.WriteFile(filepath.Join(d.dir, req.IdempotencyKey), req.Document, 0o600); err != nil {
			return sdk.DeliverResponse{}, err
		}
		return sdk.OK("doc:" + req.IdempotencyKey), nil
	case "hang":
		if err := os.WriteFile(filepath.Join(d.dir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return sdk.DeliverResponse{}, err
		}
		<-ctx.Done()
		return sdk.DeliverResponse{}, ctx.Err()
	case "slow":
		d.slow.Store(true)
		<-ctx.Done()
		return sdk.DeliverResponse{}, ctx.Err()
	case "echo-password":
		return sdk.Permanent("target refused login with password %s", d.password), nil
	}
	return sdk.Permanent("unsupported action %q", req.Action), nil
}

func (d *testDest) Lookup(_ context.Context, req sdk.LookupRequest) (sdk.LookupResponse, error) {
	if _, err := os.Stat(filepath.Join(d.dir, req.IdempotencyKey)); err == nil {
		return sdk.LookupResponse{Status: sdk.LookupFound, ExternalRef: "doc:" + req.IdempotencyKey}, nil
	}
	return sdk.LookupResponse{Status: sdk.LookupNotFound}, nil
}

func (d *testDest) List(context.Context, sdk.ListRequest) (sdk.ListResponse, error) {
	return sdk.ListResponse{}, fmt.Errorf("list: %w", sdk.ErrUnsupported)
}

func (d *testDest) Changes(context.Context, sdk.ChangesRequest) (sdk.ChangesResponse, error) {
	return sdk.ChangesResponse{Changes: []sdk.Change{{ID: "c1", Kind: "k", ChangedAt: time.Unix(1700000000, 0).UTC()}}, NextCursor: "1"}, nil
}

func (d *testDest) Health(ctx context.Context, _ sdk.HealthRequest) (sdk.HealthResponse, error) {
	if d.slow.Load() {
		<-ctx.Done()
		return sdk.HealthResponse{}, ctx.Err()
	}
	return sdk.HealthResponse{Healthy: true}, nil
}

// testSource emits records r1..rN (N = cfg.count) on every Read, forgets
// acknowledged ones, and writes its process id to cfg.dir/pid.
type testSource struct {
	mu    sync.Mutex
	count int
	dir   string
	acked map[string]bool
	sent  []string // id by seq-1 of the current Read
}

func (s *testSource) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ConfigureResponse, error) {
	var cfg struct {
		Count int    `json:"count"`
		Dir   string `json:"dir"`
	}
	if err := req.Decode(&cfg); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	s.count, s.dir, s.acked = cfg.Count, cfg.Dir, map[string]bool{}
	if s.dir != "" {
		if err := os.WriteFile(filepath.Join(s.dir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return sdk.ConfigureResponse{}, err
		}
	}
	return sdk.ConfigureResponse{Version: "test"}, nil
}

func (s *testSource) Read(ctx context.Context, _ sdk.ReadRequest, send func([]sdk.Record) error) error {
	s.mu.Lock()
	s.sent = nil
	var recs []sdk.Record
	for i := 1; i <= s.count; i++ {
		id := fmt.Sprintf("r%d", i)
		if s.acked[id] {
			continue
		}
		s.sent = append(s.sent, id)
		recs = append(recs, sdk.Record{Seq: uint64(len(s.sent)), ID: id, Event: &pb.Event{Type: "machine.state",
			Payload: &pb.Event_MachineState{MachineState: &pb.MachineState{Machine: id, State: "running"}}}})
	}
	s.mu.Unlock()
	for len(recs) > 0 {
		n := min(len(recs), 3)
		if err := send(recs[:n]); err != nil {
			return err
		}
		recs = recs[n:]
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s *testSource) Ack(_ context.Context, req sdk.AckRequest) (sdk.AckResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < int(req.Through) && i < len(s.sent); i++ {
		s.acked[s.sent[i]] = true
	}
	return sdk.AckResponse{}, nil
}

func (s *testSource) Health(context.Context, sdk.HealthRequest) (sdk.HealthResponse, error) {
	return sdk.HealthResponse{Healthy: true, Message: "fine"}, nil
}
