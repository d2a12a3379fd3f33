package delivery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
)

// fileConnector is the plugin of TestPluginKilledMidDelivery: a target
// that does not deduplicate, kept in files. Every creation appends the key
// to created.log and writes docs/KEY; Lookup looks for docs/KEY. The
// delivery of hang_key, the first time, creates the document, writes the
// process id to pid and never answers.
type fileConnector struct {
	sdk.UnimplementedDestination
	dir, hangKey string
}

type fileConfig struct {
	Dir     string `json:"dir"`
	HangKey string `json:"hang_key"`
}

func (c *fileConnector) Configure(_ context.Context, req sdk.ConfigureRequest) (sdk.ConfigureResponse, error) {
	var cfg fileConfig
	if err := req.Decode(&cfg); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	if cfg.Dir == "" {
		return sdk.ConfigureResponse{}, errors.New("dir: required")
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "docs"), 0o700); err != nil {
		return sdk.ConfigureResponse{}, err
	}
	c.dir, c.hangKey = cfg.Dir, cfg.HangKey
	return sdk.ConfigureResponse{Actions: []string{"thing.create"}, Capabilities: []sdk.Capability{sdk.CapabilityLookup}}, nil
}

func (c *fileConnector) Deliver(ctx context.Context, req sdk.DeliverRequest) (sdk.DeliverResponse, error) {
	f, err := os.OpenFile(filepath.Join(c.dir, "created.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return sdk.DeliverResponse{}, err
	}
	_, err = f.WriteString(req.IdempotencyKey + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return sdk.DeliverResponse{}, err
	}
	if err := os.WriteFile(filepath.Join(c.dir, "docs", req.IdempotencyKey), req.Document, 0o600); err != nil {
		return sdk.DeliverResponse{}, err
	}
	if req.IdempotencyKey == c.hangKey {
		if _, err := os.Stat(filepath.Join(c.dir, "pid")); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(filepath.Join(c.dir, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
				return sdk.DeliverResponse{}, err
			}
			<-ctx.Done() // the test kills this process meanwhile
			return sdk.DeliverResponse{}, ctx.Err()
		}
	}
	return sdk.OK("file:" + req.IdempotencyKey), nil
}

func (c *fileConnector) Lookup(_ context.Context, req sdk.LookupRequest) (sdk.LookupResponse, error) {
	if _, err := os.Stat(filepath.Join(c.dir, "docs", req.IdempotencyKey)); err == nil {
		return sdk.LookupResponse{Status: sdk.LookupFound, ExternalRef: "file:" + req.IdempotencyKey}, nil
	}
	return sdk.LookupResponse{Status: sdk.LookupNotFound}, nil
}

// The connector's plugin process is killed while a delivery is in flight
// (the target already created the document). The host restarts it, the
// engine looks the entry up instead of creating it again, and every entry
// ends delivered with exactly one document at the target.
func TestPluginKilledMidDelivery(t *testing.T) {
	r := newRig(t)
	keys := []string{"A", "B", "C", "D"}
	const perKey = 5
	r.store.add(keys, perKey)
	targetDir := t.TempDir()
	path, sum := sdktest.SelfPlugin(t, "files")
	ctx := context.Background()
	host, err := sdk.OpenDestination(ctx, sdk.HostConfig{Name: dest, Path: path, SHA256: sum, Logger: testLogger(t),
		RestartBackoff: 20 * time.Millisecond,
		Config:         map[string]any{"dir": targetDir, "hang_key": "idem-B-2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Close() })
	cfg := testConfig()
	cfg.BackoffInitial, cfg.BackoffMax = 20*time.Millisecond, 100*time.Millisecond
	r.start(host, cfg, host.Info().Has(sdk.CapabilityLookup))

	var pid int
	waitFor(t, 20*time.Second, "the hanging delivery", func() error {
		raw, err := os.ReadFile(filepath.Join(targetDir, "pid"))
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(string(raw))
		return err
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r.waitDelivered(len(keys) * perKey)

	raw, err := os.ReadFile(filepath.Join(targetDir, "created.log"))
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, k := range strings.Fields(string(raw)) {
		count[k]++
	}
	for _, k := range keys {
		for i := range perKey {
			if key := fmt.Sprintf("idem-%s-%d", k, i); count[key] != 1 {
				t.Errorf("%s created %d times; want once", key, count[key])
			}
		}
	}
	if len(count) != len(keys)*perKey {
		t.Errorf("%d documents at the target; want %d", len(count), len(keys)*perKey)
	}
	if st := host.Status(); st.Restarts != 1 || !st.Running || st.PID == pid {
		t.Errorf("plugin status %+v; want restarted once, running under a new pid", st)
	}
	for _, e := range r.store.entries(outbox.StateDelivered) {
		if e.ExternalRef != "file:"+e.IdempotencyKey {
			t.Errorf("entry %s ref %q", e.IdempotencyKey, e.ExternalRef)
		}
	}
}
