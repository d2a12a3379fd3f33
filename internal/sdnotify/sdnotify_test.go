package sdnotify

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// manager is a fake service manager: the receiving end of NOTIFY_SOCKET.
type manager struct {
	addr string
	msgs chan string
}

func newManager(t *testing.T, addr string) *manager {
	t.Helper()
	if addr == "" {
		addr = filepath.Join(t.TempDir(), "notify.sock")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	m := &manager{addr: addr, msgs: make(chan string, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			m.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return m
}

// next waits for the next datagram.
func (m *manager) next(t *testing.T) string {
	t.Helper()
	select {
	case s := <-m.msgs:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no notification within 5s")
		return ""
	}
}

// drain empties the queue and returns how many pings were in it.
func (m *manager) drain() (pings int) {
	for {
		select {
		case s := <-m.msgs:
			if s == "WATCHDOG=1" {
				pings++
			}
		default:
			return pings
		}
	}
}

func TestFromEnv(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		enabled  bool
		watchdog time.Duration
		err      error
	}{
		{name: "not under a service manager", env: map[string]string{}},
		{name: "socket only", env: map[string]string{EnvSocket: "/run/systemd/notify"}, enabled: true},
		{name: "abstract socket", env: map[string]string{EnvSocket: "@/org/freedesktop/systemd1/notify"}, enabled: true},
		{name: "watchdog for this process", env: map[string]string{EnvSocket: "/run/n", EnvWatchdogUSec: "30000000", EnvWatchdogPID: "42"}, enabled: true, watchdog: 30 * time.Second},
		{name: "watchdog without pid", env: map[string]string{EnvSocket: "/run/n", EnvWatchdogUSec: "500000"}, enabled: true, watchdog: 500 * time.Millisecond},
		{name: "watchdog inherited from a parent", env: map[string]string{EnvSocket: "/run/n", EnvWatchdogUSec: "30000000", EnvWatchdogPID: "7"}, enabled: true},
		{name: "vsock is not supported", env: map[string]string{EnvSocket: "vsock:2:1234"}, err: ErrUnsupportedSocket},
		{name: "bad usec", env: map[string]string{EnvSocket: "/run/n", EnvWatchdogUSec: "soon"}, enabled: true, err: ErrBadWatchdog},
		{name: "bad pid", env: map[string]string{EnvSocket: "/run/n", EnvWatchdogUSec: "1", EnvWatchdogPID: "-1"}, enabled: true, err: ErrBadWatchdog},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := FromEnv(func(k string) string { return tt.env[k] }, 42)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if n.Enabled() != tt.enabled || n.WatchdogInterval() != tt.watchdog {
				t.Fatalf("enabled=%v watchdog=%s, want %v %s", n.Enabled(), n.WatchdogInterval(), tt.enabled, tt.watchdog)
			}
		})
	}
}

func TestStateMessages(t *testing.T) {
	m := newManager(t, "")
	n := New(m.addr, 0)
	steps := []struct {
		send func() error
		want []string
	}{
		{func() error { return n.Ready("serving on 127.0.0.1:7443") }, []string{"READY=1", "STATUS=serving on 127.0.0.1:7443"}},
		{func() error { return n.Reloading("") }, []string{"RELOADING=1", "MONOTONIC_USEC="}},
		{func() error { return n.Status("two\nlines") }, []string{"STATUS=two lines"}},
		{func() error { return n.Stopping("draining") }, []string{"STOPPING=1", "STATUS=draining"}},
		{n.Ping, []string{"WATCHDOG=1"}},
	}
	for i, s := range steps {
		if err := s.send(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got := strings.Split(m.next(t), "\n")
		if len(got) != len(s.want) {
			t.Fatalf("step %d: got %q, want %q", i, got, s.want)
		}
		for j := range got {
			if !strings.HasPrefix(got[j], s.want[j]) {
				t.Fatalf("step %d: got %q, want %q", i, got, s.want)
			}
		}
	}
}

func TestAbstractSocket(t *testing.T) {
	addr := "@plantsync-sdnotify-test-" + filepath.Base(t.TempDir())
	m := newManager(t, addr)
	if err := New(addr, 0).Ready(""); err != nil {
		t.Fatal(err)
	}
	if got := m.next(t); got != "READY=1" {
		t.Fatalf("got %q", got)
	}
}

func TestDisabledIsSilent(t *testing.T) {
	var nilNotifier *Notifier
	for _, n := range []*Notifier{nilNotifier, New("", time.Second), {}} {
		if n.Enabled() || n.WatchdogInterval() != 0 {
			t.Fatalf("%+v: enabled", n)
		}
		if err := n.Ready("x"); err != nil {
			t.Fatal(err)
		}
		w := n.NewWatchdog(nil)
		if w.C() != nil {
			t.Fatal("a watchdog that is not armed must never tick")
		}
		w.Stop()
	}
}

func TestSendToMissingManagerFails(t *testing.T) {
	n := New(filepath.Join(t.TempDir(), "gone.sock"), 0)
	if err := n.Ready(""); err == nil {
		t.Fatal("want an error when nobody listens")
	}
}

// TestWatchdogFollowsTheMainLoop is the property the units rely on: pings
// come while the loop turns and stop when it is wedged.
func TestWatchdogFollowsTheMainLoop(t *testing.T) {
	m := newManager(t, "")
	const interval = 200 * time.Millisecond
	n := New(m.addr, interval)
	w := n.NewWatchdog(nil)
	defer w.Stop()

	wedge, unwedge, stop := make(chan struct{}), make(chan struct{}), make(chan struct{})
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for {
			select {
			case <-w.C():
				_ = w.Beat(context.Background())
			case <-wedge:
				<-unwedge // e.g. a reload or a drain step that never returns
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-loopDone }()

	for i := 0; i < 3; i++ {
		if got := m.next(t); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want a ping", got)
		}
	}

	wedge <- struct{}{}
	// A ping sent just before the wedge may still be on its way.
	time.Sleep(interval / 4)
	m.drain()
	// Two whole intervals without a ping is what makes systemd act.
	time.Sleep(2 * interval)
	if p := m.drain(); p > 0 {
		t.Fatalf("%d pings from a wedged loop", p)
	}

	close(unwedge)
	if got := m.next(t); got != "WATCHDOG=1" {
		t.Fatalf("got %q after the loop resumed, want a ping", got)
	}
}

// TestWatchdogFollowsThePipeline: the loop still turns, but the check it
// asks hangs (a wedged pipeline): no pings until it answers again.
func TestWatchdogFollowsThePipeline(t *testing.T) {
	m := newManager(t, "")
	const interval = 200 * time.Millisecond
	n := New(m.addr, interval)
	release := make(chan struct{})
	var wedged atomic.Bool
	check := func(ctx context.Context) error {
		if wedged.Load() {
			<-release // ignores ctx, as a deadlocked component would
		}
		return nil
	}
	w := n.NewWatchdog(check)
	defer w.Stop()
	ctx := context.Background()

	if err := w.Beat(ctx); err != nil {
		t.Fatalf("healthy beat: %v", err)
	}
	if got := m.next(t); got != "WATCHDOG=1" {
		t.Fatalf("got %q", got)
	}

	wedged.Store(true)
	for i := 0; i < 3; i++ {
		if err := w.Beat(ctx); !errors.Is(err, ErrCheckTimeout) {
			t.Fatalf("beat %d on a wedged pipeline: %v, want ErrCheckTimeout", i, err)
		}
	}
	if p := m.drain(); p > 0 {
		t.Fatalf("%d pings from a wedged pipeline", p)
	}

	wedged.Store(false)
	close(release)
	if err := w.Beat(ctx); err != nil {
		t.Fatalf("beat after the pipeline answered: %v", err)
	}
	if got := m.next(t); got != "WATCHDOG=1" {
		t.Fatalf("got %q", got)
	}
}

func TestWatchdogReportsFailedCheck(t *testing.T) {
	m := newManager(t, "")
	boom := errors.New("journal closed")
	w := New(m.addr, time.Second).NewWatchdog(func(context.Context) error { return boom })
	defer w.Stop()
	if err := w.Beat(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if p := m.drain(); p > 0 {
		t.Fatal("pinged after a failed check")
	}
}
