//go:build interop && linux

package mqtt

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
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/internal/syncbuf"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// The MQTT source against third-party peers (make interop): Debian's
// mosquitto as broker, mosquitto_pub as MES publisher and a Node.js edge
// node whose Sparkplug B payloads come from the npm packages
// sparkplug-client and sparkplug-payload. The skeleton's mosquitto test in
// e2e covers the hub end to end; these check the source's own features.

func peerPath(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		t.Fatalf("%s is not set: run `make interop` (scripts/interop.sh provisions the peers)", env)
	}
	return p
}

// peer is a child process killed when the test ends.
type peer struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{}
}

func startPeer(t *testing.T, cmd *exec.Cmd) *peer {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &peer{cmd: cmd, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.out
	}
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(cmd.Path), p.out.String())
		}
	})
	return p
}

// startMosquitto runs mosquitto on a free loopback port with a config that
// keeps every QoS 1 message (max_queued_messages 0, see README).
func startMosquitto(t *testing.T) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		_, port, _ := net.SplitHostPort(addr)
		conf := filepath.Join(t.TempDir(), "mosquitto.conf")
		lines := []string{"listener " + port + " 127.0.0.1", "allow_anonymous true", "max_queued_messages 0",
			"max_inflight_messages 0", "persistence false", "log_dest stderr"}
		if os.Geteuid() == 0 {
			lines = append(lines, "user root")
		}
		writeFile(t, conf, strings.Join(lines, "\n")+"\n")
		p := startPeer(t, exec.Command(peerPath(t, "PLANTSYNC_MOSQUITTO"), "-c", conf))
		if waitListening(t, p, addr) {
			return addr
		}
		if attempt == 3 || !strings.Contains(p.out.String(), "Address already in use") {
			t.Fatalf("mosquitto exited:\n%s", p.out.String())
		}
	}
}

// waitListening reports whether addr accepts connections before p exits.
func waitListening(t *testing.T, p *peer, addr string) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.Close()
			return true
		}
		select {
		case <-p.done:
			return false
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto not listening on %s:\n%s", addr, p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mosquittoPub publishes each line with QoS 1 from its own process.
func mosquittoPub(t *testing.T, broker, topic string, lines []string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(broker)
	cmd := exec.Command(peerPath(t, "PLANTSYNC_MOSQUITTO_PUB"), "-h", host, "-p", port, "-q", "1", "-t", topic, "-l",
		"-i", fmt.Sprintf("interop-pub-%d", time.Now().UnixNano()))
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
}

func distinct(evs []*pb.Event, typ, attr string) map[string]int {
	out := map[string]int{}
	for _, e := range eventsOfType(evs, typ) {
		out[e.GetAttributes()[attr]]++
	}
	return out
}

// JSON with ids, JSON without ids (content hash) and malformed messages
// from mosquitto_pub, with the source shut down mid-stream and restarted on
// its persistent session: every message once, the malformed quarantined, and
// nothing left unacknowledged at the broker.
func TestInteropMQTTMosquittoJSON(t *testing.T) {
	broker := startMosquitto(t)
	dir, stateDir := t.TempDir(), t.TempDir()
	buf := openBuffer(t, dir)
	status := Subscription{Topic: "mes/{plant}/{line}/status", EventType: "production.order.status", ContentHash: true,
		Attributes: map[string]Value{"order": {Path: "order"}}}
	cfg := baseConfig(broker, completionSub(), status)
	clientID := cfg.ClientID
	s, _ := testSource(t, cfg, buf, stateDir)
	waitRunning(t, s)

	const n = 2000
	var comp, stat []string
	bad := 0
	for i := range n {
		comp = append(comp, string(completionJSON(fmt.Sprintf("c-%05d", i))))
		stat = append(stat, fmt.Sprintf(`{"order":"PO-%05d","status":"released"}`, i))
		if i%250 == 99 {
			comp = append(comp, fmt.Sprintf(`{"message_id":"bad-%d","quantity":`, i))
			bad++
		}
	}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		mosquittoPub(t, broker, "mes/DE-01/L1/completion", comp)
		mosquittoPub(t, broker, "mes/DE-01/L1/status", stat)
	}()
	eventually(t, 30*time.Second, "part of the stream in the buffer", func() bool { return len(bufferedEvents(t, buf)) > n/2 })
	stopSource(t, s) // mid-stream: the broker keeps the rest for the session
	<-pubDone

	cfg2 := baseConfig(broker, completionSub(), status)
	cfg2.ClientID = clientID
	s2, _ := testSource(t, cfg2, buf, stateDir)
	var got string
	deadline := time.Now().Add(60 * time.Second)
	for {
		evs := bufferedEvents(t, buf)
		nc, ns, ne := len(distinct(evs, "production.completion", "message_id")), len(distinct(evs, "production.order.status", "order")),
			len(distinct(evs, "source.error", "quarantine_id"))
		if nc == n && ns == n && ne == bad {
			break
		}
		got = fmt.Sprintf("completions %d/%d, statuses %d/%d, source.error %d/%d (%d events)", nc, n, ns, n, ne, bad, len(eventsOfType(evs, "source.error")))
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 60s waiting for every message in the buffer: %s; source: %+v", got, s2.Health())
		}
		time.Sleep(20 * time.Millisecond)
	}
	evs := bufferedEvents(t, buf)
	for order, c := range distinct(evs, "production.order.status", "order") {
		if c != 1 {
			t.Errorf("status of %s buffered %d times: the content-hash window let a redelivery through", order, c)
		}
	}
	// Completions may be buffered twice (committed, not yet acknowledged at
	// the shutdown); their ids are equal, so the hub keeps one.
	ids := map[string]string{}
	for _, e := range eventsOfType(evs, "production.completion") {
		mid := e.GetAttributes()["message_id"]
		if prev, ok := ids[mid]; ok && prev != e.GetId() {
			t.Fatalf("message %s got two event ids", mid)
		}
		ids[mid] = e.GetId()
	}
	// So may a malformed message's report: the same quarantine entry and
	// the same event id, which the hub keeps once.
	for _, e := range eventsOfType(evs, "source.error") {
		qid := "q:" + e.GetAttributes()["quarantine_id"]
		if prev, ok := ids[qid]; ok && prev != e.GetId() {
			t.Fatalf("quarantine entry %s reported with two event ids", qid)
		}
		ids[qid] = e.GetId()
	}
	if got := s2.q.count(); got != bad {
		t.Errorf("%d quarantined, want %d", got, bad)
	}

	// Everything was acknowledged: a new session start gets nothing.
	stopSource(t, s2)
	before := len(bufferedEvents(t, buf))
	cfg3 := baseConfig(broker, completionSub(), status)
	cfg3.ClientID = clientID
	s3, reg3 := testSource(t, cfg3, buf, stateDir)
	waitRunning(t, s3)
	time.Sleep(500 * time.Millisecond)
	if got := metricValue(t, reg3, "plantsync_agent_mqtt_received_total"); got != 0 || len(bufferedEvents(t, buf)) != before {
		t.Fatalf("mosquitto redelivered %v messages after a clean restart: some were never acknowledged", got)
	}
}

// edgeProc is the Node.js Sparkplug B edge node.
type edgeProc struct {
	*peer
	stdin  io.WriteCloser
	mu     sync.Mutex
	events []string
}

func startEdge(t *testing.T, broker string) *edgeProc {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "sim", "interop", "sparkplug"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "sparkplug-client")); err != nil {
		t.Fatalf("%s has no node_modules: run scripts/peers/sparkplug-npm.sh (make interop does)", dir)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: scripts/peers/sparkplug-npm.sh installs it")
	}
	cmd := exec.Command(node, filepath.Join(dir, "edge.js"), "mqtt://"+broker, "Plant1", "Edge1", "Press1")
	cmd.Dir = dir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r, w := io.Pipe()
	cmd.Stdout = w
	e := &edgeProc{stdin: stdin}
	e.peer = startPeer(t, cmd)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			var ev struct {
				Event string `json:"event"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				e.mu.Lock()
				e.events = append(e.events, ev.Event)
				e.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { _ = w.Close() })
	return e
}

func (e *edgeProc) count(event string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.events {
		if ev == event {
			n++
		}
	}
	return n
}

func (e *edgeProc) send(t *testing.T, cmd string) {
	t.Helper()
	if _, err := io.WriteString(e.stdin, cmd+"\n"); err != nil {
		t.Fatalf("edge node stdin: %v", err)
	}
}

// Sparkplug B from sparkplug-client: the source joins after the births, so
// the first NDATA by alias is quarantined and a rebirth requested; the edge
// node re-births, data by alias maps, the held NDATA replays, and the
// NDEATH of the node's stop arrives. As primary host the source keeps its
// STATE retained at mosquitto.
func TestInteropMQTTSparkplugEdgeNode(t *testing.T) {
	broker := startMosquitto(t)
	edge := startEdge(t, broker)
	eventually(t, 15*time.Second, "edge node born", func() bool { return edge.count("birth") == 1 })

	buf := openBuffer(t, t.TempDir())
	cfg := sparkplugConfig(broker)
	cfg.Sparkplug.HostID = "plantsync-interop"
	s, reg := testSource(t, cfg, buf, t.TempDir())
	waitRunning(t, s)

	edge.send(t, `{"cmd":"ndata","alias":1,"type":"Float","value":21.5}`)
	eventually(t, 10*time.Second, "rebirth asked and answered", func() bool { return edge.count("rebirth") == 1 })
	eventually(t, 10*time.Second, "births after the rebirth", func() bool {
		return len(eventsOfType(bufferedEvents(t, buf), "machine.state")) == 2
	})
	edge.send(t, `{"cmd":"ndata","alias":1,"type":"Float","value":22.5}`)
	edge.send(t, `{"cmd":"ndata","alias":2,"type":"Int32","value":-3}`)
	edge.send(t, `{"cmd":"ddata","alias":10,"type":"Double","value":3.5}`)
	edge.send(t, `{"cmd":"ddeath"}`)
	eventually(t, 10*time.Second, "data by alias mapped", func() bool {
		o := observations(bufferedEvents(t, buf))
		return o["NDATA Temperature"].GetDoubleValue() == 22.5 && o["NDATA Count"].GetIntValue() == -3 && o["DDATA Pressure"].GetDoubleValue() == 3.5
	})
	if o := observations(bufferedEvents(t, buf))["NBIRTH Temperature"]; o.GetUnit() != "°C" || o.GetDataType() != "Float" || o.GetDoubleValue() != 20.5 {
		t.Errorf("NBIRTH Temperature from sparkplug-payload: %v", o)
	}
	if got := metricValue(t, reg, "plantsync_agent_mqtt_sparkplug_sequence_gaps_total"); got != 0 {
		t.Errorf("%v sequence gaps in sparkplug-client's numbering", got)
	}
	if st := mosquittoRetained(t, broker, "spBv1.0/STATE/plantsync-interop"); !strings.Contains(st, `"online":true`) {
		t.Errorf("STATE at mosquitto: %q", st)
	}

	rep, err := s.Replay(t.Context(), nil)
	if err != nil || rep.Replayed != 1 || rep.Failed != 0 {
		t.Fatalf("replay of the NDATA held before the rebirth: %+v %v", rep, err)
	}
	found := false
	for _, e := range eventsOfType(bufferedEvents(t, buf), "observation") {
		found = found || e.GetAttributes()["message_type"] == "NDATA" && e.GetObservation().GetDoubleValue() == 21.5
	}
	if !found {
		t.Error("replayed NDATA 21.5 not in the buffer")
	}

	edge.send(t, `{"cmd":"stop"}`)
	eventually(t, 10*time.Second, "NDEATH mapped", func() bool {
		for _, e := range eventsOfType(bufferedEvents(t, buf), "machine.state") {
			if e.GetMachineState().GetState() == "offline" && e.GetMachineState().GetMachine() == "Edge1" {
				return true
			}
		}
		return false
	})
	stopSource(t, s)
	if st := mosquittoRetained(t, broker, "spBv1.0/STATE/plantsync-interop"); !strings.Contains(st, `"online":false`) {
		t.Errorf("STATE after shutdown: %q", st)
	}
}

// mosquittoRetained reads a retained message with mosquitto_sub.
func mosquittoRetained(t *testing.T, broker, topic string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(broker)
	out, err := exec.Command(peerPath(t, "PLANTSYNC_MOSQUITTO_SUB"), "-h", host, "-p", port, "-t", topic, "-C", "1", "-W", "5").Output()
	if err != nil {
		t.Logf("mosquitto_sub: %v", err)
	}
	return strings.TrimSpace(string(out))
}
