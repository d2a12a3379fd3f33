package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// loopbackPair is a TCP connection on 127.0.0.1: the client end wrapped in
// a batchConn, the server end plain.
func loopbackPair(t *testing.T) (*batchConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = server.Close() })
	bc := newBatchConn(raw)
	t.Cleanup(func() { _ = bc.Close() })
	return bc, server
}

// Close must send what is still pending (paho writes DISCONNECT and closes
// at once; a lost DISCONNECT makes the broker publish the will).
func TestBatchConnCloseSendsPending(t *testing.T) {
	bc, server := loopbackPair(t)
	var want []byte
	for i := range 1000 {
		p := fmt.Appendf(nil, "packet-%04d;", i)
		want = append(want, p...)
		if n, err := bc.Write(p); err != nil || n != len(p) {
			t.Fatalf("write %d: n=%d err=%v", i, n, err)
		}
	}
	if err := bc.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(server)
	if err != nil {
		t.Fatalf("server read: %v", err)
	}
	if string(got) != string(want) {
		t.Fatalf("server got %d bytes, want %d (in order)", len(got), len(want))
	}
	if _, err := bc.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v, want net.ErrClosed", err)
	}
}

// A write that fails (the peer is gone) fails every later write, so paho
// sees the connection as lost and the broker redelivers what was not
// acknowledged.
func TestBatchConnWriteErrorIsSticky(t *testing.T) {
	bc, server := loopbackPair(t)
	if tc, ok := server.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // reset, not FIN: the client's writes fail
	}
	_ = server.Close()
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		_, err = bc.Write(make([]byte, 4096))
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes to a reset connection kept succeeding")
	}
	if _, err2 := bc.Write([]byte("x")); err2 == nil {
		t.Fatalf("write after the error %v succeeded", err)
	}
}

// Reads come through the buffer whole and in order, however paho splits
// them.
func TestBatchConnReads(t *testing.T) {
	bc, server := loopbackPair(t)
	msg := make([]byte, 3*readBufferSize+17)
	for i := range msg {
		msg[i] = byte(i)
	}
	go func() { _, _ = server.Write(msg) }()
	got := make([]byte, len(msg))
	for off := 0; off < len(got); {
		n, err := bc.Read(got[off:min(off+1+off%5, len(got))])
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		off += n
	}
	for i := range msg {
		if got[i] != msg[i] {
			t.Fatalf("byte %d: got %d, want %d", i, got[i], msg[i])
		}
	}
}

// The source connects over WebSocket too (dialBroker's ws scheme).
func TestWebsocketBroker(t *testing.T) {
	b := mochi.New(&mochi.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	if err := b.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	// mochi's WebSocket listener cannot tell the port it got: take a free
	// one from the kernel (port 0) and hand it over.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	_ = free.Close()
	l := listeners.NewWebsocket(listeners.Config{ID: "ws", Address: addr})
	if err := b.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBroker(b) })
	eventually(t, 5*time.Second, "websocket listener up", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
	sink := &recordingSink{}
	cfg := baseConfig(addr, completionSub())
	cfg.Brokers = []string{"ws://" + addr}
	s, _ := testSource(t, cfg, sink, t.TempDir())
	waitRunning(t, s)
	if err := b.Publish("mes/DE-01/L1/completion", completionJSON("ws-1"), false, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the message over WebSocket", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.events) == 1 && sink.events[0].Attributes["message_id"] == "ws-1"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
