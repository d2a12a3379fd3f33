package plantsim

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// frontDoor accepts OPC UA clients on the configured address and relays
// each connection to gopcua on a private loopback port. gopcua cannot hang
// up on a client that stays connected: its Close waits ten seconds for the
// client to leave, and a connection that delivers a message after the
// server has stopped blocks a goroutine forever. Owning the client sockets
// lets Shutdown close them first, so it is quick and leaves nothing behind.
type frontDoor struct {
	ln     net.Listener
	logger *slog.Logger

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closed  bool
	done    chan struct{} // closed by close, wakes a backing-off accept loop
	wg      sync.WaitGroup
	backend string
}

func listenFrontDoor(addr string, logger *slog.Logger) (*frontDoor, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &frontDoor{
		ln:     ln,
		logger: logger,
		conns:  map[net.Conn]struct{}{},
		done:   make(chan struct{}),
	}, nil
}

// serve starts relaying to backend (host:port).
func (f *frontDoor) serve(backend string) {
	f.backend = backend
	f.wg.Add(1)
	go f.accept()
}

func (f *frontDoor) accept() {
	defer f.wg.Done()
	var backoff time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as net/http
			// does instead of spinning.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			f.logger.Warn("accept opc ua client failed", "error", err, "retry_in", backoff)
			select {
			case <-f.done:
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		f.wg.Add(1)
		go f.relay(c)
	}
}

func (f *frontDoor) relay(client net.Conn) {
	defer f.wg.Done()
	d := net.Dialer{Timeout: 5 * time.Second}
	server, err := d.Dial("tcp", f.backend)
	if err != nil {
		f.logger.Warn("relay opc ua client failed", "client", client.RemoteAddr().String(), "error", err)
		_ = client.Close()
		return
	}
	if !f.track(client, server) {
		_ = client.Close()
		_ = server.Close()
		return
	}
	f.logger.Debug("opc ua client connected", "client", client.RemoteAddr().String())

	// Whichever side ends first ends both.
	var pump sync.WaitGroup
	pump.Add(1)
	go func() {
		defer pump.Done()
		_, _ = io.Copy(server, client)
		_ = client.Close()
		_ = server.Close()
	}()
	_, _ = io.Copy(client, server)
	_ = client.Close()
	_ = server.Close()
	pump.Wait()

	f.untrack(client, server)
	f.logger.Debug("opc ua client disconnected", "client", client.RemoteAddr().String())
}

func (f *frontDoor) track(conns ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	for _, c := range conns {
		f.conns[c] = struct{}{}
	}
	return true
}

func (f *frontDoor) untrack(conns ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range conns {
		delete(f.conns, c)
	}
}

// close stops accepting and hangs up on every client. It is safe to call
// more than once.
func (f *frontDoor) close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	close(f.done)
	conns := make([]net.Conn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	f.mu.Unlock()

	_ = f.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
}

// wait returns when every relay goroutine has ended; call close first.
func (f *frontDoor) wait() { f.wg.Wait() }
