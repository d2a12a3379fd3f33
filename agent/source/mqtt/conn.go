package mqtt

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

// paho reads a packet with three or four read calls (the first byte, the
// length a byte at a time, the rest) and writes every PUBACK with a call of
// its own: on an unbuffered socket that is four or five system calls per
// message, most of the source's cost at tens of thousands of messages a
// second. dialBroker opens the connection as paho would and wraps it in a
// batchConn, which reads through a buffer and hands writes to a flusher
// goroutine, so the PUBACKs of a commit group leave in a few segments.

const (
	readBufferSize = 64 << 10
	// maxPendingWrite bounds what waits for the flusher: a writer blocks
	// beyond it, so a broker that stops reading stalls paho as a plain
	// socket would, instead of growing memory.
	maxPendingWrite = 256 << 10
	// closeFlushTimeout bounds how long Close waits to send what is
	// pending (the DISCONNECT among it) to a peer that does not read.
	closeFlushTimeout = 2 * time.Second
)

// dialBroker is paho's OpenConnectionFunc: the schemes paho knows, each
// dialled as paho itself dials it (proxy settings from the environment
// included), then wrapped.
func dialBroker(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	dialer := o.Dialer
	if dialer == nil {
		dialer = &net.Dialer{Timeout: o.ConnectTimeout}
	}
	var (
		conn net.Conn
		err  error
	)
	switch uri.Scheme {
	case "ws", "wss":
		dialURI := *uri // the websocket library refuses URLs with user info
		dialURI.User = nil
		var tc *tls.Config
		if uri.Scheme == "wss" {
			tc = o.TLSConfig
		}
		conn, err = paho.NewWebsocket(dialURI.String(), tc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "mqtt", "tcp":
		conn, err = proxy.FromEnvironmentUsing(dialer).Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts":
		if os.Getenv("all_proxy") == "" {
			conn, err = tls.DialWithDialer(dialer, "tcp", uri.Host, o.TLSConfig)
			break
		}
		var raw net.Conn
		if raw, err = proxy.FromEnvironment().Dial("tcp", uri.Host); err != nil {
			break
		}
		tc := tls.Client(raw, o.TLSConfig)
		if err = tc.Handshake(); err != nil {
			_ = raw.Close()
			break
		}
		conn = tc
	default:
		return nil, errors.New("unknown protocol " + uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return newBatchConn(conn), nil
}

// batchConn reads through a buffer and coalesces writes. Write copies and
// returns; a flusher goroutine writes whatever has gathered in one call. A
// write error is sticky: the next Write returns it and the connection is
// closed, which paho sees as a lost connection (unacknowledged messages are
// redelivered by the broker, as with any lost connection).
type batchConn struct {
	net.Conn
	r *bufio.Reader

	mu      sync.Mutex
	cond    sync.Cond
	pending []byte
	spare   []byte
	writing bool // the flusher is in a write
	err     error
	closed  bool
}

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize)}
	b.cond.L = &b.mu
	go b.flushLoop()
	return b
}

func (b *batchConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.err == nil && !b.closed && len(b.pending) >= maxPendingWrite {
		b.cond.Wait()
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.closed {
		return 0, net.ErrClosed
	}
	b.pending = append(b.pending, p...)
	b.cond.Broadcast()
	return len(p), nil
}

func (b *batchConn) flushLoop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		for b.err == nil && len(b.pending) == 0 && !b.closed {
			b.cond.Wait()
		}
		if b.err != nil || len(b.pending) == 0 {
			return // failed, or closed with nothing left to send
		}
		buf := b.pending
		b.pending, b.spare = b.spare[:0], nil
		b.writing = true
		b.mu.Unlock()
		_, err := b.Conn.Write(buf)
		b.mu.Lock()
		b.writing = false
		if cap(buf) <= maxPendingWrite*2 {
			b.spare = buf
		}
		if err != nil {
			b.err = err
			b.cond.Broadcast()
			_ = b.Conn.Close()
			return
		}
		b.cond.Broadcast()
	}
}

// Close sends what is pending first (paho writes DISCONNECT and closes at
// once; the broker must see the DISCONNECT, or it publishes the will),
// waiting at most closeFlushTimeout for a peer that does not read.
func (b *batchConn) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.cond.Broadcast()
	if b.err == nil && (len(b.pending) > 0 || b.writing) {
		_ = b.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
		for b.err == nil && (len(b.pending) > 0 || b.writing) {
			b.cond.Wait()
		}
	}
	b.mu.Unlock()
	return b.Conn.Close()
}
