package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
)

// deliverWithin delivers with its own deadline, as the delivery engine
// does with destinations[].delivery.timeout.
func deliverWithin(d *sdk.DestinationHost, timeout time.Duration, action string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: "k-" + action, Action: action, Document: json.RawMessage(`{}`)})
	return err
}

func waitLog(t *testing.T, logs *syncBuffer, text string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(logs.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q in:\n%s", text, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A wedged plugin process (stopped: it answers nothing, not even its
// health check) is killed and restarted after HangAfter timed-out calls.
func TestWedgedPluginKilledAndRestarted(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "dest")
	var logs syncBuffer
	d := openDest(t, sdk.HostConfig{Name: "erp", Path: path, SHA256: sum, Config: map[string]any{"dir": t.TempDir()},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), HangAfter: 2, HealthTimeout: 300 * time.Millisecond})
	if err := deliverWithin(d, 10*time.Second, "store"); err != nil {
		t.Fatal(err)
	}
	pid := d.Status().PID
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	for i := range 2 {
		if err := deliverWithin(d, 200*time.Millisecond, "store"); err == nil {
			t.Fatalf("deliver %d to a stopped process succeeded", i)
		}
	}
	waitLog(t, &logs, "plugin process stopped answering; killing and restarting it")
	if err := deliverWithin(d, 15*time.Second, "store"); err != nil {
		t.Fatalf("deliver after the restart: %v", err)
	}
	if st := d.Status(); st.PID == pid || st.Restarts != 1 || !st.Running {
		t.Errorf("status after the restart: %+v (wedged pid %d)", st, pid)
	}
}

// A plugin whose calls time out because its target is slow, but which
// answers its health check, keeps running.
func TestSlowTargetDoesNotRestartThePlugin(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "dest")
	var logs syncBuffer
	d := openDest(t, sdk.HostConfig{Name: "erp", Path: path, SHA256: sum, Config: map[string]any{"dir": t.TempDir()},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), HangAfter: 2, HealthTimeout: 5 * time.Second})
	if err := deliverWithin(d, 10*time.Second, "store"); err != nil {
		t.Fatal(err)
	}
	pid := d.Status().PID
	for range 2 {
		// "hang" blocks until the call's deadline: a target that is slow.
		if err := deliverWithin(d, 200*time.Millisecond, "hang"); err == nil || errors.Is(err, sdk.ErrUnavailable) {
			t.Fatalf("hanging deliver: %v, want a timeout", err)
		}
	}
	waitLog(t, &logs, "its target is slow")
	if err := deliverWithin(d, 10*time.Second, "store"); err != nil {
		t.Fatal(err)
	}
	if st := d.Status(); st.PID != pid || st.Restarts != 0 {
		t.Errorf("status: %+v, want the same process %d, no restart", st, pid)
	}
	if strings.Contains(logs.String(), "stopped answering") {
		t.Errorf("a slow target restarted the plugin:\n%s", logs.String())
	}
}
