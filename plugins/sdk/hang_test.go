package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/internal/syncbuf"
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

func waitLog(t *testing.T, logs *syncbuf.Buffer, text string) {
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
	var logs syncbuf.Buffer
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
	waitStopped(t, pid)
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
	// The wedged process is gone, not left stopped: resumed, it could
	// finish a delivery the engine has meanwhile looked up and resent.
	waitGone(t, pid)
}

// Closing the host while its plugin process is stopped ends it: go-plugin
// alone would wait for ever for the process to confirm its shutdown.
func TestCloseEndsAStoppedPlugin(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "dest")
	d, err := sdk.OpenDestination(ctxT(t), sdk.HostConfig{Name: "erp", Path: path, SHA256: sum, Config: map[string]any{"dir": t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	pid := d.Status().PID
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitStopped(t, pid)
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal("Close did not return with the plugin process stopped")
	}
	waitGone(t, pid)
}

// waitGone waits until process pid no longer exists.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d still exists", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A plugin whose calls time out because its target is slow keeps running,
// even when its own Health (which asks the target) does not answer either:
// the liveness check is answered by the process, not the connector.
func TestSlowTargetDoesNotRestartThePlugin(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "dest")
	var logs syncbuf.Buffer
	d := openDest(t, sdk.HostConfig{Name: "erp", Path: path, SHA256: sum, Config: map[string]any{"dir": t.TempDir()},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), HangAfter: 2, HealthTimeout: 5 * time.Second})
	if err := deliverWithin(d, 10*time.Second, "store"); err != nil {
		t.Fatal(err)
	}
	pid := d.Status().PID
	for range 2 {
		// "slow" blocks until the call's deadline, and Health with it.
		if err := deliverWithin(d, 200*time.Millisecond, "slow"); err == nil || errors.Is(err, sdk.ErrUnavailable) {
			t.Fatalf("slow deliver: %v, want a timeout", err)
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

// Calls the caller cancels (a shutdown, a client gone) say nothing about
// the plugin: they do not count towards HangAfter.
func TestCancelledCallsDoNotCount(t *testing.T) {
	path, sum := sdktest.SelfPlugin(t, "dest")
	var logs syncbuf.Buffer
	d := openDest(t, sdk.HostConfig{Name: "erp", Path: path, SHA256: sum, Config: map[string]any{"dir": t.TempDir()},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), HangAfter: 1, HealthTimeout: time.Second})
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		if _, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: "k", Action: "hang"}); err == nil {
			t.Fatal("a cancelled deliver succeeded")
		}
	}
	// A timed-out call starts the check at once (HangAfter 1): its log
	// line shows that the check runs, and that the cancelled calls before
	// did not start one.
	if err := deliverWithin(d, 100*time.Millisecond, "hang"); err == nil {
		t.Fatal("a hanging deliver succeeded")
	}
	waitLog(t, &logs, "its target is slow")
	if n := strings.Count(logs.String(), "keep running out of time"); n != 1 {
		t.Errorf("%d liveness checks, want 1 (cancelled calls do not count):\n%s", n, logs.String())
	}
}

// waitStopped waits until every thread of pid has stopped: SIGSTOP reaches
// the threads of a running process one after the other.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		stopped := len(tasks) > 0
		for _, f := range tasks {
			raw, err := os.ReadFile(f)
			// The state follows the command name in parentheses.
			if i := strings.LastIndexByte(string(raw), ')'); err != nil || i < 0 || i+2 >= len(raw) || raw[i+2] != 'T' {
				stopped = false
			}
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not stop", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
