package faultproxy_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/internal/faultproxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ioTimeout bounds every read a test expects to succeed; it only fires when
// the proxy is broken.
const ioTimeout = 5 * time.Second

// echoServer is a real TCP peer on 127.0.0.1:0. Each connection first
// receives the greeting (if any) and then gets back everything it sends;
// when the client half-closes, the server half-closes too.
type echoServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startEcho(t *testing.T, greeting string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &echoServer{ln: ln, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					_ = c.Close()
				}()
				if greeting != "" {
					if _, err := io.WriteString(c, greeting); err != nil {
						return
					}
				}
				if _, err := io.Copy(c, c); err != nil {
					return
				}
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

func (s *echoServer) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func newProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("faultproxy.New: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

// readN reads exactly n bytes or fails the test.
func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(buf)
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if err := c.SetWriteDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// roundTrip checks that c is forwarded both ways.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	write(t, c, msg)
	if got := readN(t, c, len(msg)); got != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// expectClosed asserts that the proxy ends c (EOF or a reset) rather than
// leaving it hanging until the read deadline.
func expectClosed(t *testing.T, c net.Conn) error {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	n, err := c.Read(make([]byte, 64))
	if err == nil {
		t.Fatalf("read %d bytes from a connection that should be closed", n)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after %v", ioTimeout)
	}
	return err
}

// expectNothing asserts that nothing arrives on c within wait.
func expectNothing(t *testing.T, c net.Conn, wait time.Duration) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	n, err := c.Read(make([]byte, 64))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read returned n=%d err=%v while no bytes should flow", n, err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestForward(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())

	c := dial(t, p.Addr())
	roundTrip(t, c, "hello")
	roundTrip(t, c, "world!")

	eventually(t, "byte counters", func() bool {
		s := p.Stats()
		return s.BytesToTarget == 11 && s.BytesToClient == 11
	})
	s := p.Stats()
	if s.Accepted != 1 || s.Open != 1 || s.Refused != 0 || s.DialFailures != 0 {
		t.Fatalf("stats = %+v, want 1 accepted, 1 open", s)
	}

	_ = c.Close()
	eventually(t, "connection to be released", func() bool { return p.Stats().Open == 0 })
}

func TestHalfCloseIsForwarded(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())

	c := dial(t, p.Addr())
	write(t, c, "last words")
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if err := c.SetReadDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read until EOF: %v", err)
	}
	if string(got) != "last words" {
		t.Fatalf("got %q, want %q", got, "last words")
	}
}

func TestConcurrentBulkTransfer(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())

	const conns, size = 4, 512 << 10
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for range conns {
		c := dial(t, p.Addr())
		payload := make([]byte, size)
		if _, err := rand.Read(payload); err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := c.Write(payload)
			if err == nil {
				err = c.CloseWrite()
			}
			if err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, payload) {
				errs <- errors.New("echoed payload differs from what was sent")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	eventually(t, "byte counters", func() bool {
		s := p.Stats()
		return s.BytesToTarget == conns*size && s.BytesToClient == conns*size
	})
}

func TestCut(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())

	c := dial(t, p.Addr())
	roundTrip(t, c, "before")

	p.Cut()
	expectClosed(t, c)
	eventually(t, "cut connection to be released", func() bool { return p.Stats().Open == 0 })

	// While cut, a dial may complete (the kernel accepts) but the proxy
	// closes the connection at once.
	for i := range 3 {
		refused := dial(t, p.Addr())
		_, _ = refused.Write([]byte("x"))
		expectClosed(t, refused)
		// The proxy counts a refusal before closing, so no polling needed.
		if got := p.Stats().Refused; got != uint64(i+1) {
			t.Fatalf("Refused = %d after %d refused dials", got, i+1)
		}
	}

	p.Restore()
	c2 := dial(t, p.Addr())
	roundTrip(t, c2, "after")
	if s := p.Stats(); s.Open != 1 {
		t.Fatalf("stats after restore = %+v, want 1 open", s)
	}
}

func TestStall(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())

	c := dial(t, p.Addr())
	roundTrip(t, c, "warm-up")
	eventually(t, "warm-up counted", func() bool { return p.Stats().BytesToTarget == 7 })

	p.Stall()
	write(t, c, "held")
	// A connection made during the stall is accepted but carries nothing.
	c2 := dial(t, p.Addr())
	write(t, c2, "queued")

	expectNothing(t, c, 300*time.Millisecond)
	expectNothing(t, c2, 10*time.Millisecond)
	if s := p.Stats(); s.BytesToTarget != 7 {
		t.Fatalf("bytes reached the target while stalled: %+v", s)
	}
	if s := p.Stats(); s.Open != 2 {
		t.Fatalf("stall closed connections: %+v", s)
	}

	p.Unstall()
	if got := readN(t, c, 4); got != "held" {
		t.Fatalf("after unstall got %q, want %q", got, "held")
	}
	if got := readN(t, c2, 6); got != "queued" {
		t.Fatalf("after unstall got %q, want %q", got, "queued")
	}
	roundTrip(t, c, "flowing")
}

func TestCloseDuringStall(t *testing.T) {
	echo := startEcho(t, "")
	p, err := faultproxy.New(echo.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.Addr())
	roundTrip(t, c, "x")

	p.Stall()
	write(t, c, "stuck")
	p.SetDelay(time.Hour)

	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Close hung while stalled")
	}
	expectClosed(t, c)
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), ioTimeout); err == nil {
		t.Fatal("closed proxy still accepts connections")
	}
}

func TestDelay(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, "no delay")

	const d = 100 * time.Millisecond
	p.SetDelay(d)
	for _, msg := range []string{"first", "second"} {
		start := time.Now()
		roundTrip(t, c, msg)
		// Each direction adds d; only the lower bound is reliable on a
		// loaded machine.
		if rtt := time.Since(start); rtt < 2*d {
			t.Fatalf("round trip %v with delay %v in each direction, want >= %v", rtt, d, 2*d)
		}
	}

	// Order survives a lowered delay: bytes read earlier leave first.
	write(t, c, "A")
	p.SetDelay(0)
	write(t, c, "B")
	if got := readN(t, c, 2); got != "AB" {
		t.Fatalf("got %q, want %q", got, "AB")
	}
}

func TestResetAll(t *testing.T) {
	echo := startEcho(t, "")
	p := newProxy(t, echo.addr())
	c := dial(t, p.Addr())
	roundTrip(t, c, "ping")

	p.ResetAll()
	err := expectClosed(t, c)
	// A plain close would give io.EOF; only SO_LINGER 0 yields a reset, and
	// Linux reports a received RST to the next read as ECONNRESET.
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after ResetAll: %v, want ECONNRESET", err)
	}
	eventually(t, "reset connection to be released", func() bool { return p.Stats().Open == 0 })

	// Not refusing: a new connection works straight away.
	c2 := dial(t, p.Addr())
	roundTrip(t, c2, "pong")
	if s := p.Stats(); s.Refused != 0 {
		t.Fatalf("ResetAll refused connections: %+v", s)
	}
}

func TestSetTarget(t *testing.T) {
	a := startEcho(t, "A")
	b := startEcho(t, "B")
	p := newProxy(t, a.addr())

	c1 := dial(t, p.Addr())
	if got := readN(t, c1, 1); got != "A" {
		t.Fatalf("first connection greeted by %q, want A", got)
	}

	p.SetTarget(b.addr())
	c2 := dial(t, p.Addr())
	if got := readN(t, c2, 1); got != "B" {
		t.Fatalf("connection after SetTarget greeted by %q, want B", got)
	}
	// The old connection stays with its old target.
	roundTrip(t, c1, "still A")
	roundTrip(t, c2, "now B")
}

func TestDialFailure(t *testing.T) {
	// A port that was free a moment ago: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()

	p := newProxy(t, dead)
	c := dial(t, p.Addr())
	expectClosed(t, c)
	eventually(t, "dial failure counted", func() bool { return p.Stats().DialFailures == 1 })
}

func TestNewOnRebindsSamePort(t *testing.T) {
	echo := startEcho(t, "")
	p1, err := faultproxy.New(echo.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := p1.Addr()
	c := dial(t, addr)
	roundTrip(t, c, "one")
	if err := p1.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)

	p2, err := faultproxy.NewOn(addr, echo.addr(), nil)
	if err != nil {
		t.Fatalf("NewOn(%s) after Close: %v", addr, err)
	}
	t.Cleanup(func() { _ = p2.Close() })
	if p2.Addr() != addr {
		t.Fatalf("Addr = %s, want %s", p2.Addr(), addr)
	}
	roundTrip(t, dial(t, addr), "two")
}

func TestNewOnRejectsBadAddresses(t *testing.T) {
	tests := []struct {
		name, listen, target string
		want                 error
		wantText             string
	}{
		{"all interfaces", "0.0.0.0:0", "127.0.0.1:1", faultproxy.ErrNotLoopback, "use 127.0.0.1:0"},
		{"empty host", ":0", "127.0.0.1:1", faultproxy.ErrNotLoopback, `listen ":0"`},
		{"non-loopback ip", "192.0.2.1:0", "127.0.0.1:1", faultproxy.ErrNotLoopback, "192.0.2.1"},
		{"listen without port", "127.0.0.1", "127.0.0.1:1", faultproxy.ErrInvalidAddress, "missing port"},
		{"target without port", "127.0.0.1:0", "127.0.0.1", faultproxy.ErrInvalidAddress, `target "127.0.0.1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := faultproxy.NewOn(tt.listen, tt.target, nil)
			if err == nil {
				_ = p.Close()
				t.Fatalf("NewOn(%q, %q) succeeded", tt.listen, tt.target)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("error %q does not mention %q", err, tt.wantText)
			}
		})
	}
}

func TestLocalhostListen(t *testing.T) {
	echo := startEcho(t, "")
	p, err := faultproxy.NewOn("localhost:0", echo.addr(), nil)
	if err != nil {
		t.Fatalf("NewOn(localhost:0): %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	roundTrip(t, dial(t, p.Addr()), "hi")
}
