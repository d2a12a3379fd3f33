package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/internal/sdnotify"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// manager is a fake service manager listening on a NOTIFY_SOCKET.
type manager struct {
	addr string
	msgs chan string
}

func newManager(t *testing.T) *manager {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
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

// expect waits for a message starting with prefix, skipping watchdog pings.
func (m *manager) expect(t *testing.T, prefix string) string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-m.msgs:
			if s == "WATCHDOG=1" && prefix != s {
				continue
			}
			if !strings.HasPrefix(s, prefix) {
				t.Fatalf("got %q, want %q...", s, prefix)
			}
			return s
		case <-deadline:
			t.Fatalf("no %q within 5s", prefix)
			return ""
		}
	}
}

func (m *manager) pings() (n int) {
	for {
		select {
		case s := <-m.msgs:
			if s == "WATCHDOG=1" {
				n++
			}
		default:
			return n
		}
	}
}

// fake is a component that records what the run loop did to it.
type fake struct {
	mu        sync.Mutex
	calls     []string
	deadline  time.Duration // Shutdown's remaining budget when called
	reloadErr error
	wedged    atomic.Bool
	release   chan struct{}
	block     chan struct{} // Shutdown waits on it, ignoring its deadline
}

func (f *fake) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return copyStrings(f.calls)
}

func copyStrings(s []string) []string { return append([]string(nil), s...) }

func (f *fake) Start(ctx context.Context) error { f.record("start"); return nil }

func (f *fake) Shutdown(ctx context.Context) error {
	f.record("shutdown")
	if d, ok := ctx.Deadline(); ok {
		f.mu.Lock()
		f.deadline = time.Until(d)
		f.mu.Unlock()
	}
	if f.block != nil {
		<-f.block
	}
	return nil
}

func (f *fake) Reload(ctx context.Context) error { f.record("reload"); return f.reloadErr }

func (f *fake) Alive(ctx context.Context) error {
	if f.wedged.Load() {
		<-f.release
	}
	return nil
}

type result struct{ err error }

func run(t *testing.T, c Component, n *sdnotify.Notifier, sigs chan os.Signal, stop time.Duration) <-chan result {
	t.Helper()
	out := make(chan result, 1)
	go func() {
		err := RunWith(c, slog.New(slog.DiscardHandler), Options{StopTimeout: stop, Notifier: n, Signals: sigs})
		out <- result{err}
	}()
	return out
}

func wait(t *testing.T, ch <-chan result) error {
	t.Helper()
	select {
	case r := <-ch:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s")
		return nil
	}
}

func TestRunReadyReloadDrain(t *testing.T) {
	m := newManager(t)
	f := &fake{}
	sigs := make(chan os.Signal, 1)
	done := run(t, f, sdnotify.New(m.addr, 0), sigs, 3*time.Second)

	m.expect(t, "READY=1")
	sigs <- syscall.SIGHUP
	m.expect(t, "RELOADING=1")
	m.expect(t, "READY=1\nSTATUS=running")
	sigs <- syscall.SIGTERM
	m.expect(t, "STOPPING=1")
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if got, want := f.Calls(), []string{"start", "reload", "shutdown"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("calls %v, want %v", got, want)
	}
	if f.deadline <= 2*time.Second || f.deadline > 3*time.Second {
		t.Fatalf("Shutdown got %s of budget, want the stop timeout (3s)", f.deadline)
	}
}

func TestRunFailedReloadKeepsServing(t *testing.T) {
	m := newManager(t)
	f := &fake{reloadErr: errors.New("log.level: \"loud\"")}
	sigs := make(chan os.Signal, 1)
	done := run(t, f, sdnotify.New(m.addr, 0), sigs, time.Second)
	m.expect(t, "READY=1")
	sigs <- syscall.SIGHUP
	m.expect(t, "RELOADING=1")
	if s := m.expect(t, "READY=1"); !strings.Contains(s, "last reload failed: log.level") {
		t.Fatalf("status %q does not tell the reload failed", s)
	}
	sigs <- syscall.SIGINT
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestRunWatchdogStopsWhileWedged(t *testing.T) {
	m := newManager(t)
	const interval = 200 * time.Millisecond
	f := &fake{release: make(chan struct{})}
	sigs := make(chan os.Signal, 1)
	done := run(t, f, sdnotify.New(m.addr, interval), sigs, time.Second)
	m.expect(t, "READY=1")
	m.expect(t, "WATCHDOG=1")
	m.expect(t, "WATCHDOG=1")

	f.wedged.Store(true)
	time.Sleep(interval / 2) // let a beat already under way finish
	m.pings()
	time.Sleep(2 * interval)
	if p := m.pings(); p > 0 {
		t.Fatalf("%d pings while the component was wedged", p)
	}
	f.wedged.Store(false)
	close(f.release)
	m.expect(t, "WATCHDOG=1")

	sigs <- syscall.SIGTERM
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestRunDrainTimeout(t *testing.T) {
	f := &fake{block: make(chan struct{})}
	defer close(f.block)
	sigs := make(chan os.Signal, 1)
	done := run(t, f, sdnotify.New("", 0), sigs, 200*time.Millisecond)
	sigs <- syscall.SIGTERM
	if err := wait(t, done); !errors.Is(err, ErrDrainTimeout) {
		t.Fatalf("err = %v, want ErrDrainTimeout", err)
	}
}

func TestRunSecondSignalAbortsDrain(t *testing.T) {
	m := newManager(t)
	f := &fake{block: make(chan struct{})}
	defer close(f.block)
	sigs := make(chan os.Signal, 2)
	done := run(t, f, sdnotify.New(m.addr, 0), sigs, time.Minute)
	m.expect(t, "READY=1")
	sigs <- syscall.SIGTERM
	m.expect(t, "STOPPING=1")
	sigs <- syscall.SIGHUP // ignored while draining
	sigs <- os.Interrupt
	if err := wait(t, done); !errors.Is(err, ErrDrainAborted) {
		t.Fatalf("err = %v, want ErrDrainAborted", err)
	}
}

type failing struct{ fake }

func (f *failing) Start(context.Context) error { return errors.New("metrics.listen: address in use") }

func TestRunStartFailure(t *testing.T) {
	m := newManager(t)
	err := wait(t, run(t, &failing{}, sdnotify.New(m.addr, 0), make(chan os.Signal), time.Second))
	if err == nil || !strings.Contains(err.Error(), "address in use") {
		t.Fatalf("err = %v", err)
	}
	if s := m.expect(t, "STATUS=start failed"); !strings.Contains(s, "address in use") {
		t.Fatalf("status %q", s)
	}
}

// TestRunRealSignals goes through the process's own signal handling, as
// systemd's `kill -HUP $MAINPID` and stop do.
func TestRunRealSignals(t *testing.T) {
	m := newManager(t)
	f := &fake{}
	done := make(chan error, 1)
	go func() {
		done <- RunWith(f, slog.New(slog.DiscardHandler), Options{StopTimeout: time.Second, Notifier: sdnotify.New(m.addr, 0)})
	}()
	// READY=1 comes after signal.Notify: from here the signals are ours.
	m.expect(t, "READY=1")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	m.expect(t, "RELOADING=1")
	m.expect(t, "READY=1")
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no drain after SIGTERM")
	}
	if got := f.Calls(); !reflect.DeepEqual(got, []string{"start", "reload", "shutdown"}) {
		t.Fatalf("calls %v", got)
	}
}

func TestLoggerLevelChangesLive(t *testing.T) {
	var buf bytes.Buffer
	root := Logger(&buf, "info", "json")
	child := root.With("component", "buffer").WithGroup("g")
	child.Debug("hidden")
	if err := SetLogLevel(child, "debug"); err != nil {
		t.Fatal(err)
	}
	root.Debug("shown-root")
	child.Debug("shown-child")
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "shown-root") || !strings.Contains(out, "shown-child") {
		t.Fatalf("output:\n%s", out)
	}
	if err := SetLogLevel(root, "loud"); err == nil {
		t.Fatal("want an error for an unknown level")
	}
	if err := SetLogLevel(slog.New(slog.DiscardHandler), "debug"); !errors.Is(err, ErrFixedLevel) {
		t.Fatalf("err = %v, want ErrFixedLevel", err)
	}
}

func TestChangedFields(t *testing.T) {
	type tls struct {
		Cert string `yaml:"cert"`
	}
	type Common struct {
		Name string `yaml:"name"`
	}
	type src struct {
		Common
		Brokers []string `yaml:"brokers"`
	}
	type entry struct {
		Common
		Config any
		line   int
	}
	type cfg struct {
		Level   string            `yaml:"level"`
		Every   time.Duration     `yaml:"every"`
		TLS     tls               `yaml:"tls"`
		Labels  map[string]string `yaml:"labels"`
		Sources []entry           `yaml:"sources"`
		Ptr     *tls              `yaml:"ptr,omitempty"`
		Skip    string            `yaml:"-"`
		hidden  int
	}
	base := func() cfg {
		return cfg{
			Level: "info", Every: time.Second, TLS: tls{Cert: "a.crt"}, Labels: map[string]string{"a": "1"},
			Sources: []entry{{Common: Common{Name: "mes"}, Config: &src{Common: Common{Name: "mes"}, Brokers: []string{"tcp://a:1883"}}, line: 3}},
		}
	}
	tests := []struct {
		name   string
		change func(*cfg)
		want   []string
	}{
		{"nothing", func(c *cfg) { c.Sources[0].line = 9; c.hidden = 1; c.Skip = "x" }, nil},
		{"scalar", func(c *cfg) { c.Level = "debug" }, []string{"level"}},
		{"duration", func(c *cfg) { c.Every = time.Minute }, []string{"every"}},
		{"nested", func(c *cfg) { c.TLS.Cert = "b.crt" }, []string{"tls.cert"}},
		{"map", func(c *cfg) { c.Labels["a"] = "2" }, []string{"labels"}},
		{"inline source option", func(c *cfg) { c.Sources[0].Config.(*src).Brokers[0] = "tcp://b:1883" }, []string{"sources[0].brokers[0]"}},
		{"source added", func(c *cfg) { c.Sources = append(c.Sources, entry{}) }, []string{"sources"}},
		{"pointer set", func(c *cfg) { c.Ptr = &tls{} }, []string{"ptr"}},
		{"two", func(c *cfg) { c.Level = "warn"; c.TLS.Cert = "" }, []string{"level", "tls.cert"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			after := base()
			after.Labels = map[string]string{"a": "1"}
			after.Sources[0].Config = &src{Common: Common{Name: "mes"}, Brokers: []string{"tcp://a:1883"}}
			tt.change(&after)
			if got := ChangedFields(base(), after); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
