//go:build interop

package opcua

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// NodeServer is the node-opcua server of sim/interop/opcua-server, run as
// a child process on 127.0.0.1 (scripts/peers/node-opcua.sh installs it and
// exports PLANTSYNC_NODE_OPCUA_DIR).
type NodeServer struct {
	Endpoint string
	Addr     string
	PKI      string
	NS       int // namespace index of the machines

	cmd   *exec.Cmd
	stdin io.WriteCloser
	resp  chan map[string]any
	done  chan struct{}

	mu     sync.Mutex
	counts map[string]int
	log    strings.Builder
}

// NodeServerOptions start a NodeServer.
type NodeServerOptions struct {
	MaxSessions   int
	AcceptUnknown bool
	User          string // NAME:PASSWORD; anonymous sessions are refused
}

// StartNodeServer runs the server; it stops when the test ends.
func StartNodeServer(t testing.TB, o NodeServerOptions) *NodeServer {
	t.Helper()
	dir := os.Getenv("PLANTSYNC_NODE_OPCUA_DIR")
	if dir == "" {
		t.Fatal("PLANTSYNC_NODE_OPCUA_DIR is not set: run `make interop`, or `source scripts/peers/node-opcua.sh` first")
	}
	node := os.Getenv("PLANTSYNC_NODE")
	if node == "" {
		node = "node"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	n := &NodeServer{PKI: filepath.Join(t.TempDir(), "pki"), resp: make(chan map[string]any, 16), done: make(chan struct{}), counts: map[string]int{}}
	args := []string{filepath.Join(dir, "server.mjs"), "--port", fmt.Sprint(port), "--pki", n.PKI}
	if o.MaxSessions > 0 {
		args = append(args, "--max-sessions", fmt.Sprint(o.MaxSessions))
	}
	if o.AcceptUnknown {
		args = append(args, "--accept-unknown")
	}
	if o.User != "" {
		args = append(args, "--user", o.User)
	}
	n.cmd = exec.Command(node, args...)
	n.cmd.Dir = dir
	n.stdin, err = n.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	n.cmd.Stderr = &lockedWriter{n: n}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start node-opcua server: %v", err)
	}
	ready := make(chan map[string]any, 1)
	go n.read(stdout, ready)
	t.Cleanup(func() { n.stop(t) })
	select {
	case ev := <-ready:
		n.Endpoint, _ = ev["endpoint"].(string)
		n.Addr = strings.TrimPrefix(n.Endpoint, "opc.tcp://")
		if f, ok := ev["namespaceIndex"].(float64); ok {
			n.NS = int(f)
		}
	case <-n.done:
		t.Fatalf("node-opcua server exited before it was ready:\n%s", n.output())
	case <-time.After(90 * time.Second):
		t.Fatalf("node-opcua server not ready after 90s:\n%s", n.output())
	}
	return n
}

type lockedWriter struct{ n *NodeServer }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.n.mu.Lock()
	defer w.n.mu.Unlock()
	if w.n.log.Len() < 1<<20 {
		w.n.log.Write(p)
	}
	return len(p), nil
}

func (n *NodeServer) output() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log.String()
}

func (n *NodeServer) read(r io.Reader, ready chan map[string]any) {
	defer close(n.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var ev map[string]any
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &ev) != nil {
			(&lockedWriter{n: n}).Write([]byte(line + "\n"))
			continue
		}
		switch name, _ := ev["event"].(string); name {
		case "ready":
			ready <- ev
		case "ok", "error":
			n.resp <- ev
		default:
			n.mu.Lock()
			n.counts[name]++
			n.mu.Unlock()
		}
	}
}

// Count is how often the server reported an event, e.g.
// "create_session_request".
func (n *NodeServer) Count(event string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.counts[event]
}

// Do sends one command and waits for its answer.
func (n *NodeServer) Do(t testing.TB, cmd string) map[string]any {
	t.Helper()
	if _, err := fmt.Fprintln(n.stdin, cmd); err != nil {
		t.Fatalf("node-opcua server %q: %v", cmd, err)
	}
	select {
	case ev := <-n.resp:
		if ev["event"] == "error" {
			t.Fatalf("node-opcua server %q: %v", cmd, ev["error"])
		}
		return ev
	case <-n.done:
		t.Fatalf("node-opcua server exited during %q:\n%s", cmd, n.output())
	case <-time.After(20 * time.Second):
		t.Fatalf("node-opcua server did not answer %q", cmd)
	}
	return nil
}

// NodeID is the NodeId of a machine key, e.g. Line1.M1.Temp.
func (n *NodeServer) NodeID(key string) string { return fmt.Sprintf("ns=%d;s=%s", n.NS, key) }

func (n *NodeServer) stop(t testing.TB) {
	_, _ = fmt.Fprintln(n.stdin, "quit")
	_ = n.stdin.Close()
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	_ = n.cmd.Wait()
	if t.Failed() {
		t.Logf("node-opcua server output:\n%s", n.output())
	}
}
