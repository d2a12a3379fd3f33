package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrNotLoopback is returned when the proxy is asked to listen on an address
// that is not a loopback address.
var ErrNotLoopback = errors.New("listen address is not a loopback address")

// ErrInvalidAddress is returned when a listen or target address is not of the
// form host:port.
var ErrInvalidAddress = errors.New("invalid address")

const (
	// dialTimeout bounds how long an accepted client waits for the target;
	// a test peer on loopback answers in microseconds or not at all.
	dialTimeout = 5 * time.Second
	// chunkSize is the most one read forwards as a single chunk.
	chunkSize = 32 << 10
	// queuedChunks is how many chunks per direction may wait for their delay
	// or for Unstall before the proxy stops reading and TCP backpressure
	// reaches the sender.
	queuedChunks = 64
	// acceptBackoff paces retries after a transient Accept error (EMFILE).
	acceptBackoff = 50 * time.Millisecond
)

// Stats counts what went through a Proxy since it was created.
type Stats struct {
	// Accepted counts every TCP connection accepted, refused ones included.
	Accepted uint64
	// Refused counts connections closed at once because the proxy was cut.
	Refused uint64
	// DialFailures counts accepted connections whose target could not be
	// reached; the client sees its connection closed.
	DialFailures uint64
	// BytesToTarget counts bytes written from clients to the target.
	BytesToTarget uint64
	// BytesToClient counts bytes written from the target to clients.
	BytesToClient uint64
	// Open is the number of forwarded connections currently open.
	Open int
}

// Proxy forwards TCP connections from a loopback listener to a target and
// injects faults on demand. All methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	logger *slog.Logger

	// ctx is cancelled by Close; it aborts dials in progress and every wait
	// inside the forwarding goroutines.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	delay atomic.Int64 // nanoseconds

	accepted      atomic.Uint64
	refused       atomic.Uint64
	dialFailures  atomic.Uint64
	bytesToTarget atomic.Uint64
	bytesToClient atomic.Uint64

	mu     sync.Mutex
	target string
	cut    bool
	closed bool
	// stalled is non-nil while the proxy is stalled; Unstall closes it to
	// release every waiting writer at once.
	stalled chan struct{}
	links   map[*link]struct{}

	closeOnce sync.Once
	closeErr  error
}

// New starts a proxy listening on 127.0.0.1 on a free port and forwarding
// each accepted connection to target (host:port, normally on loopback).
// A nil logger discards logs.
func New(target string, logger *slog.Logger) (*Proxy, error) {
	return NewOn("127.0.0.1:0", target, logger)
}

// NewOn is New with a given listen address, so that a test can stop a proxy
// and start a new one on the same port. The listen host must be a loopback
// address or "localhost".
func NewOn(listen, target string, logger *slog.Logger) (*Proxy, error) {
	if err := checkListen(listen); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("faultproxy: target %q: %w: %w", target, ErrInvalidAddress, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen on %s: %w", listen, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		ln:     ln,
		logger: logger.With("component", "faultproxy", "listen", ln.Addr().String()),
		ctx:    ctx,
		cancel: cancel,
		target: target,
		links:  make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	p.logger.Info("fault proxy started", "target", target)
	return p, nil
}

func checkListen(listen string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("faultproxy: listen %q: %w: %w", listen, ErrInvalidAddress, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("faultproxy: listen %q: %w; use 127.0.0.1:0", listen, ErrNotLoopback)
	}
	return nil
}

// Addr returns the address clients should dial, e.g. "127.0.0.1:40123".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every current connection on both sides and, until Restore,
// accepts new connections only to close them at once, so clients see EOF or
// a reset rather than a dial timeout — as when a peer process dies.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	links := p.snapshotLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.abort(false)
	}
	p.logger.Info("fault proxy cut", "closed_connections", len(links))
}

// Restore undoes Cut: new connections are forwarded again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
	p.logger.Info("fault proxy restored")
}

// Stall stops forwarding in both directions while keeping every connection
// open, as a hung peer or a black-holed route would. Bytes sent meanwhile
// wait in the proxy (and, once its queue is full, in the kernel buffers) and
// are delivered in order after Unstall. New connections are still accepted
// and dialled, but carry no bytes either.
func (p *Proxy) Stall() {
	p.mu.Lock()
	if p.stalled == nil {
		p.stalled = make(chan struct{})
	}
	p.mu.Unlock()
	p.logger.Info("fault proxy stalled")
}

// Unstall resumes forwarding after Stall.
func (p *Proxy) Unstall() {
	p.mu.Lock()
	if p.stalled != nil {
		close(p.stalled)
		p.stalled = nil
	}
	p.mu.Unlock()
	p.logger.Info("fault proxy unstalled")
}

// SetDelay adds latency d to every chunk forwarded in either direction,
// counted from when the proxy read it; 0 removes the delay. Chunks keep their
// order, so lowering the delay never lets later bytes overtake earlier ones.
func (p *Proxy) SetDelay(d time.Duration) {
	if d < 0 {
		d = 0
	}
	p.delay.Store(int64(d))
	p.logger.Info("fault proxy delay set", "delay", d)
}

// ResetAll aborts every current connection with a TCP RST on both sides
// (SO_LINGER 0, then close), so peers see ECONNRESET instead of an orderly
// EOF. Unlike Cut, new connections are forwarded as usual.
func (p *Proxy) ResetAll() {
	p.mu.Lock()
	links := p.snapshotLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.abort(true)
	}
	p.logger.Info("fault proxy reset connections", "reset_connections", len(links))
}

// SetTarget changes the address that connections accepted from now on are
// forwarded to; current connections stay with their old target.
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
	p.logger.Info("fault proxy target set", "target", addr)
}

// Stats returns the counters so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	open := len(p.links)
	p.mu.Unlock()
	return Stats{
		Accepted:      p.accepted.Load(),
		Refused:       p.refused.Load(),
		DialFailures:  p.dialFailures.Load(),
		BytesToTarget: p.bytesToTarget.Load(),
		BytesToClient: p.bytesToClient.Load(),
		Open:          open,
	}
}

// Close stops listening, closes every connection and waits for all of the
// proxy's goroutines to end, also while stalled or delaying. It is
// idempotent; later calls return the first call's result.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		links := p.snapshotLocked()
		p.mu.Unlock()

		p.cancel()
		if err := p.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			p.closeErr = fmt.Errorf("faultproxy: close listener: %w", err)
		}
		for _, l := range links {
			l.abort(false)
		}
		p.wg.Wait()
		p.logger.Info("fault proxy stopped")
	})
	return p.closeErr
}

func (p *Proxy) snapshotLocked() []*link {
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	return links
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			p.logger.Warn("fault proxy accept failed", "error", err)
			select {
			case <-time.After(acceptBackoff):
				continue
			case <-p.ctx.Done():
				return
			}
		}
		p.accepted.Add(1)

		p.mu.Lock()
		switch {
		case p.closed:
			p.mu.Unlock()
			_ = c.Close()
			return
		case p.cut:
			p.mu.Unlock()
			p.refused.Add(1)
			_ = c.Close()
			continue
		}
		// Added under mu so that Close, which sets closed under mu before
		// waiting, never races a late Add.
		p.wg.Add(1)
		target := p.target
		p.mu.Unlock()
		go p.serve(c.(*net.TCPConn), target)
	}
}

func (p *Proxy) serve(client *net.TCPConn, target string) {
	defer p.wg.Done()

	d := net.Dialer{Timeout: dialTimeout}
	sc, err := d.DialContext(p.ctx, "tcp", target)
	if err != nil {
		p.dialFailures.Add(1)
		p.logger.Warn("fault proxy cannot reach target", "target", target, "error", err)
		_ = client.Close()
		return
	}
	l := &link{client: client, server: sc.(*net.TCPConn), done: make(chan struct{})}

	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		l.abort(false)
		return
	case p.cut:
		// Cut came between Accept and here; treat it as refused.
		p.mu.Unlock()
		p.refused.Add(1)
		l.abort(false)
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.pipe(l, l.client, l.server, &p.bytesToTarget)
	}()
	go func() {
		defer wg.Done()
		p.pipe(l, l.server, l.client, &p.bytesToClient)
	}()
	wg.Wait()
	l.abort(false)

	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// link is one forwarded connection: the accepted client side and the dialled
// target side.
type link struct {
	client, server *net.TCPConn
	done           chan struct{}
	once           sync.Once
}

// abort closes both sides once; with rst the peers get a TCP reset.
func (l *link) abort(rst bool) {
	l.once.Do(func() {
		if rst {
			_ = l.client.SetLinger(0)
			_ = l.server.SetLinger(0)
		}
		_ = l.client.Close()
		_ = l.server.Close()
		close(l.done)
	})
}

type chunk struct {
	data []byte
	due  time.Time
}

// pipe forwards src to dst until src reaches EOF (then half-closes dst, so a
// client's CloseWrite reaches the target) or either side fails (then aborts
// the whole link). A reader goroutine stamps each chunk with its due time so
// that the delay is latency, not a throughput limit.
func (p *Proxy) pipe(l *link, src, dst *net.TCPConn, counter *atomic.Uint64) {
	chunks := make(chan chunk, queuedChunks)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.readLoop(l, src, chunks)
	}()
	defer wg.Wait()

	for c := range chunks {
		if !p.waitDue(l, c.due) || !p.waitUnstalled(l) {
			return
		}
		n, err := dst.Write(c.data)
		counter.Add(uint64(n))
		if err != nil {
			l.abort(false)
			return
		}
	}
	select {
	case <-l.done:
	default:
		_ = dst.CloseWrite()
	}
}

func (p *Proxy) readLoop(l *link, src *net.TCPConn, chunks chan<- chunk) {
	defer close(chunks)
	buf := make([]byte, chunkSize)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			c := chunk{data: bytes.Clone(buf[:n]), due: time.Now().Add(time.Duration(p.delay.Load()))}
			select {
			case chunks <- c:
			case <-l.done:
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				// Pass a reset on to the other side so it sees what a
				// direct connection would have seen.
				l.abort(errors.Is(err, syscall.ECONNRESET))
			}
			return
		}
	}
}

func (p *Proxy) waitDue(l *link, due time.Time) bool {
	wait := time.Until(due)
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	case <-p.ctx.Done():
		return false
	}
}

// waitUnstalled blocks while the proxy is stalled. It re-checks after each
// wake-up because a Stall may follow an Unstall before this goroutine runs.
func (p *Proxy) waitUnstalled(l *link) bool {
	for {
		p.mu.Lock()
		ch := p.stalled
		p.mu.Unlock()
		if ch == nil {
			return true
		}
		select {
		case <-ch:
		case <-l.done:
			return false
		case <-p.ctx.Done():
			return false
		}
	}
}
