package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/plantsync/plantsync/internal/syncbuf"
	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openDest(t *testing.T, cfg sdk.HostConfig) *sdk.DestinationHost {
	t.Helper()
	d, err := sdk.OpenDestination(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func TestWrongChecksumRefused(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "dest")
	wrong := strings.Repeat("ab", 32)
	_, err := sdk.OpenDestination(ctxT(t), sdk.HostConfig{Path: path, SHA256: wrong, Config: map[string]any{"dir": t.TempDir()}})
	if !errors.Is(err, sdk.ErrChecksumMismatch) {
		t.Fatalf("err = %v, want ErrChecksumMismatch", err)
	}
	for _, want := range []string{"expected sha256 " + wrong, "actual " + sum, path} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if _, err := sdk.OpenDestination(ctxT(t), sdk.HostConfig{Path: path, SHA256: "nope"}); !errors.Is(err, sdk.ErrConfig) {
		t.Errorf("malformed sum: err = %v, want ErrConfig", err)
	}
}

func TestDestinationRoundTripAndMetrics(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "dest")
	reg := prometheus.NewRegistry()
	m, err := sdk.NewPrometheusMetrics(reg, "plantsync_hub")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := openDest(t, sdk.HostConfig{Name: "erp", Path: path, SHA256: strings.ToUpper(sum), Config: map[string]any{"dir": dir}, Metrics: m})
	info := d.Info()
	if !info.Supports("store") || !info.Has(sdk.CapabilityLookup) || info.Has(sdk.CapabilityChanges) || info.Version != "test" {
		t.Fatalf("info = %+v", info)
	}
	ctx := ctxT(t)
	if lk, err := d.Lookup(ctx, sdk.LookupRequest{IdempotencyKey: "k1"}); err != nil || lk.Status != sdk.LookupNotFound {
		t.Fatalf("lookup before = %+v, %v", lk, err)
	}
	res, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: "k1", Action: "store", Attempt: 1, Document: json.RawMessage(`{"a":1}`)})
	if err != nil || res.Outcome != sdk.OutcomeOK || res.ExternalRef != "doc:k1" {
		t.Fatalf("deliver = %+v, %v", res, err)
	}
	if raw, _ := os.ReadFile(filepath.Join(dir, "k1")); string(raw) != `{"a":1}` {
		t.Fatalf("stored %q", raw)
	}
	if lk, err := d.Lookup(ctx, sdk.LookupRequest{IdempotencyKey: "k1"}); err != nil || lk.Status != sdk.LookupFound || lk.ExternalRef != "doc:k1" {
		t.Fatalf("lookup after = %+v, %v", lk, err)
	}
	if _, err := d.List(ctx, sdk.ListRequest{Since: time.Now()}); !errors.Is(err, sdk.ErrUnsupported) {
		t.Fatalf("list: err = %v, want ErrUnsupported", err)
	}
	ch, err := d.Changes(ctx, sdk.ChangesRequest{})
	if err != nil || len(ch.Changes) != 1 || !ch.Changes[0].ChangedAt.Equal(time.Unix(1700000000, 0)) || ch.NextCursor != "1" {
		t.Fatalf("changes = %+v, %v", ch, err)
	}
	if h, err := d.Health(ctx, sdk.HealthRequest{}); err != nil || !h.Healthy {
		t.Fatalf("health = %+v, %v", h, err)
	}
	if got := metricValue(t, reg, "plantsync_hub_plugin_calls_total", "deliver", "erp", "ok"); got != 1 {
		t.Errorf("deliver ok calls = %v, want 1", got)
	}
	if got := metricValue(t, reg, "plantsync_hub_plugin_up", "erp"); got != 1 {
		t.Errorf("up = %v, want 1", got)
	}
	if st := d.Status(); !st.Running || st.PID <= 0 || st.PID == os.Getpid() {
		t.Errorf("status = %+v", st)
	}
}

func TestWrongKindAndVersionRefused(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "source")
	_, err := sdk.OpenDestination(ctxT(t), sdk.HostConfig{Path: path, SHA256: sum})
	if !errors.Is(err, sdk.ErrWrongKind) {
		t.Fatalf("source as destination: err = %v, want ErrWrongKind", err)
	}
	path, sum = sdktest.SelfPlugin(t, "v2")
	_, err = sdk.OpenDestination(ctxT(t), sdk.HostConfig{Path: path, SHA256: sum, StartTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "incompatible API version") {
		t.Fatalf("protocol v2 plugin: err = %v, want an incompatible version error", err)
	}
}

func TestPluginConfigErrorReported(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "dest")
	_, err := sdk.OpenDestination(ctxT(t), sdk.HostConfig{Path: path, SHA256: sum, Config: map[string]any{"dri": "x"}})
	if !errors.Is(err, sdk.ErrConfig) || !strings.Contains(err.Error(), `unknown field "dri"`) {
		t.Fatalf("err = %v, want ErrConfig naming the unknown field", err)
	}
}

// A plugin that logs its own password: the host's log shows it scrubbed,
// in the message, in a field and inside a structured value, and the
// delivery message that quotes it is scrubbed too. An inline password is
// refused.
func TestSecretScrubbed(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "dest")
	const password = "s3cr3t-Pa55word!"
	t.Setenv("SDKTEST_PASSWORD", password)
	var logs syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d := openDest(t, sdk.HostConfig{Name: "erp", Path: path, SHA256: sum, Logger: log,
		Config: map[string]any{"dir": t.TempDir(), "password": "env:SDKTEST_PASSWORD"}})
	res, err := d.Deliver(ctxT(t), sdk.DeliverRequest{IdempotencyKey: "k", Action: "echo-password"})
	if err != nil || res.Outcome != sdk.OutcomePermanent {
		t.Fatalf("deliver = %+v, %v", res, err)
	}
	if strings.Contains(res.Message, password) || !strings.Contains(res.Message, sdk.Redacted) {
		t.Errorf("deliver message not scrubbed: %q", res.Message)
	}
	// The plugin's log line arrives through its stderr asynchronously.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "connecting to the target") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	_ = d.Close()
	out := logs.String()
	var line map[string]any
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "connecting to the target") {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
		}
	}
	if line == nil {
		t.Fatalf("the plugin's log line never reached the host log:\n%s", out)
	}
	if strings.Contains(out, password) {
		t.Fatalf("password leaked into the host log:\n%s", out)
	}
	if line["msg"] != "connecting to the target with password "+sdk.Redacted || line["password"] != sdk.Redacted ||
		line["plugin"] != "erp" || line["level"] != "INFO" {
		t.Errorf("plugin log line = %v", line)
	}
	if !strings.Contains(out, `"auth":"{\"pw\":\"[redacted]\"}"`) {
		t.Errorf("structured value not scrubbed:\n%s", out)
	}

	_, err = sdk.OpenDestination(ctxT(t), sdk.HostConfig{Path: path, SHA256: sum, Config: map[string]any{"dir": "x", "password": password}})
	if !errors.Is(err, sdk.ErrConfig) || strings.Contains(err.Error(), password) || !strings.Contains(err.Error(), "config.password") {
		t.Errorf("inline password: err = %v, want ErrConfig naming config.password without the value", err)
	}
}

func waitPID(t *testing.T, file string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if raw, err := os.ReadFile(file); err == nil && len(raw) > 0 {
			pid, err := strconv.Atoi(string(raw))
			if err == nil {
				return pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no pid in %s", file)
	return 0
}

// The plugin process killed mid-Deliver: that call fails as unavailable
// (outcome unknown), the next Deliver restarts the plugin and works, and
// Lookup answers for the document the killed call may have written.
func TestKilledMidDeliverRestarted(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "dest")
	reg := prometheus.NewRegistry()
	m, err := sdk.NewPrometheusMetrics(reg, "plantsync_hub")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := openDest(t, sdk.HostConfig{Name: "erp", Path: path, SHA256: sum, Config: map[string]any{"dir": dir}, Metrics: m})
	ctx := ctxT(t)
	errc := make(chan error, 1)
	go func() {
		_, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: "h", Action: "hang"})
		errc <- err
	}()
	pid := waitPID(t, filepath.Join(dir, "pid"))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, sdk.ErrUnavailable) {
		t.Fatalf("killed deliver: err = %v, want ErrUnavailable", err)
	}
	res, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: "k2", Action: "store", Document: json.RawMessage(`{}`)})
	if err != nil || res.Outcome != sdk.OutcomeOK {
		t.Fatalf("deliver after the kill = %+v, %v", res, err)
	}
	st := d.Status()
	if !st.Running || st.PID == pid || st.Restarts != 1 {
		t.Errorf("status = %+v (killed pid %d)", st, pid)
	}
	if got := metricValue(t, reg, "plantsync_hub_plugin_restarts_total", "erp"); got != 1 {
		t.Errorf("restarts = %v, want 1", got)
	}
	if lk, err := d.Lookup(ctx, sdk.LookupRequest{IdempotencyKey: "k2"}); err != nil || lk.Status != sdk.LookupFound {
		t.Errorf("lookup = %+v, %v", lk, err)
	}
}

// A source plugin killed while records wait for their ack: the host reads
// the restarted plugin on, seq numbers keep increasing, and the records the
// dead process never saw acked arrive again with the same ids.
func TestSourceRestartedAndAcked(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "source")
	dir := t.TempDir()
	s, err := sdk.OpenSource(ctxT(t), sdk.HostConfig{Name: "drop", Path: path, SHA256: sum, Config: map[string]any{"count": 5, "dir": dir},
		RestartBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	got := make(chan sdk.Record, 100)
	done := make(chan error, 1)
	go func() {
		done <- s.Read(ctx, sdk.ReadRequest{}, func(recs []sdk.Record) error {
			for _, r := range recs {
				got <- r
			}
			return nil
		})
	}()
	next := func() sdk.Record {
		select {
		case r := <-got:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no record")
		}
		return sdk.Record{}
	}
	var first []sdk.Record
	for range 5 {
		first = append(first, next())
	}
	if first[0].Seq != 1 || first[4].Seq != 5 || first[0].ID != "r1" || first[0].Event.GetMachineState().GetMachine() != "r1" {
		t.Fatalf("first read = %v", first)
	}
	// r1 and r2 committed; then the process dies.
	if _, err := s.Ack(ctx, sdk.AckRequest{Through: 2}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(waitPID(t, filepath.Join(dir, "pid")), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The new process knows nothing of acks: all five again, numbered on.
	var again []sdk.Record
	for range 5 {
		again = append(again, next())
	}
	if again[0].Seq != 6 || again[0].ID != "r1" || again[4].Seq != 10 {
		t.Fatalf("after restart = %v", again)
	}
	// A late ack of the dead process's records is dropped, not applied to
	// the new one; acking the new numbering works.
	if _, err := s.Ack(ctx, sdk.AckRequest{Through: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ack(ctx, sdk.AckRequest{Through: 10}); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Health(ctx, sdk.HealthRequest{}); err != nil || !h.Healthy {
		t.Fatalf("health = %+v, %v", h, err)
	}
	if st := s.Status(); st.Restarts != 1 {
		t.Errorf("restarts = %d, want 1", st.Restarts)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("read ended with %v", err)
	}
}

// metricValue is the value of the series of name whose label values are
// values (in label name order).
func metricValue(t *testing.T, reg *prometheus.Registry, name string, values ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetValue())
			}
			if strings.Join(got, ",") != strings.Join(values, ",") {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}
