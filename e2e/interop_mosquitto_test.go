//go:build interop && linux

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/hub"
	"github.com/plantsync/plantsync/internal/syncbuf"
	"github.com/plantsync/plantsync/internal/testkit"
)

// The agent's MQTT reader against Debian's mosquitto, fed by mosquitto_pub:
// every QoS 1 message reaches the hub's journal exactly once, also when the
// agent is shut down mid-stream, messages pile up in its persistent broker
// session while it is away, and it comes back with the same state dir.
//
// A mosquitto_sub observer counts what the broker accepted, independently of
// plantsync, so a shortfall points at the agent and not at the peers.
func TestInteropMosquittoToHub(t *testing.T) {
	const (
		topic = "mes/DE-01/L1/completion"
		n1    = 2000 // steady stream
		n2    = 3000 // stream with the agent down for its second half
	)
	begin := time.Now()
	m := startMosquitto(t)
	obs := startMQObserver(t, m)
	t.Logf("mosquitto on %s, observer subscribed (%s)", m.addr, time.Since(begin).Round(time.Millisecond))

	p := testkit.NewPKI(t)
	h := startHub(t, testkit.HubConfig(t, p, filepath.Join(t.TempDir(), "hub")))
	t.Cleanup(func() { stop(t, h) })

	acfg := testkit.AgentConfig(t, p, "agent-1", "DE-01", filepath.Join(t.TempDir(), "agent"), h.GRPCAddr(), m.addr)
	var a *agent.Agent // the running agent; replaced on restart
	t.Cleanup(func() {
		if a != nil {
			stop(t, a)
		}
	})
	a = startInProcAgent(t, acfg)
	epoch := a.Status().Buffer.Epoch

	ids1 := mqMessageIDs("s", n1)
	ids2 := mqMessageIDs("r", n2)
	diagnose := func(t *testing.T, want []string) {
		t.Helper()
		if !t.Failed() {
			return
		}
		got := messageIDs(t, h.Journal())
		var missing []string
		for _, id := range want {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		js := h.Journal().Stats()
		t.Logf("hub: %d distinct ids, journaled=%d duplicates=%d rejected=%d; missing %d of %d, first: %v",
			len(got), js.JournaledTotal, js.DuplicateTotal, js.RejectedTotal, len(missing), len(want), missing[:min(len(missing), 10)])
		t.Logf("observer saw %d of %d", obs.countOf(want), len(want))
		if a != nil {
			st := a.Status()
			t.Logf("agent: buffer %+v uplink %+v sources %+v", st.Buffer, st.Uplink, st.Sources)
		}
		t.Logf("mosquitto log:\n%s", m.out.Tail(40))
	}

	ok := t.Run("steady", func(t *testing.T) {
		defer diagnose(t, ids1)
		start := time.Now()
		pub := startMQLinePublisher(t, m, topic)
		for _, id := range ids1 {
			pub.line(t, id)
		}
		pub.finish(t)
		published := time.Since(start)
		waitJournalExactlyOnce(t, h, n1, ids1)
		obs.waitFor(t, ids1)
		t.Logf("%d messages: published in %s, all journaled once after %s", n1, published.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	})
	if !ok {
		return
	}

	t.Run("agent restart with persistent session", func(t *testing.T) {
		defer diagnose(t, slices.Concat(ids1, ids2))
		start := time.Now()
		half := n2 / 2
		pub := startMQLinePublisher(t, m, topic)
		agentDown := make(chan struct{})
		writerDone := make(chan error, 1)
		var written atomic.Int64 // lines handed to mosquitto_pub
		go func() {
			writerDone <- func() error {
				for i, id := range ids2 {
					if i == half {
						if err := pub.flush(); err != nil {
							return err
						}
						<-agentDown
					}
					if err := pub.write(id); err != nil {
						return err
					}
					written.Add(1)
					// Paced so the agent is stopped while the first half
					// is still arriving, not after it has drained.
					if i < half && i%25 == 24 {
						if err := pub.flush(); err != nil {
							return err
						}
						time.Sleep(2 * time.Millisecond)
					}
				}
				return pub.flush()
			}()
		}()
		t.Cleanup(func() {
			select {
			case <-agentDown:
			default:
				close(agentDown) // lets the writer end if the test failed early
			}
		})

		// Stop the agent once part of the first half is at the hub.
		testkit.Eventually(t, 30*time.Second, "first events of the stream at the hub", func() bool {
			return h.Journal().Stats().JournaledTotal >= uint64(n1+half/4)
		})
		atStop, sent := len(messageIDs(t, h.Journal()))-n1, written.Load()
		stop(t, a)
		a = nil
		close(agentDown)
		t.Logf("agent shut down with %d of %d messages written to mosquitto_pub and %d at the hub (%s)",
			sent, n2, atStop, time.Since(start).Round(time.Millisecond))

		if err := <-writerDone; err != nil {
			t.Fatalf("writing to mosquitto_pub: %v", err)
		}
		pub.finish(t)
		// Everything is at the broker before the agent comes back, so the
		// second half can only reach the hub through the kept session.
		obs.waitFor(t, ids2)
		if got := len(messageIDs(t, h.Journal())); got >= n1+n2 {
			t.Fatalf("hub holds %d ids while the agent was down; want fewer than %d", got, n1+n2)
		}
		down := time.Since(start)

		a = startInProcAgent(t, acfg)
		if e := a.Status().Buffer.Epoch; e != epoch {
			t.Fatalf("restarted agent has epoch %q, want %q: the state dir was not reused", e, epoch)
		}
		waitJournalExactlyOnce(t, h, n1+n2, slices.Concat(ids1, ids2))
		js := h.Journal().Stats()
		t.Logf("%d messages: all journaled once %s after the restart (duplicates dropped by the hub: %d)",
			n2, (time.Since(start) - down).Round(time.Millisecond), js.DuplicateTotal)
		testkit.Eventually(t, 10*time.Second, "agent buffer drained", func() bool { return a.Buffer().Stats().Events == 0 })
	})
}

// startInProcAgent starts an agent and waits until its MQTT source has subscribed.
func startInProcAgent(t *testing.T, cfg agent.Config) *agent.Agent {
	t.Helper()
	a, err := agent.New(cfg, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatalf("agent start: %v", err)
	}
	testkit.Eventually(t, 15*time.Second, "mqtt source subscribed to mosquitto", func() bool {
		return a.Status().Sources["mes"].State == "running"
	})
	return a
}

// waitJournalExactlyOnce waits until the journal holds total events, then checks
// that they are exactly the ids in want, each once.
func waitJournalExactlyOnce(t *testing.T, h *hub.Hub, total int, want []string) {
	t.Helper()
	testkit.Eventually(t, 60*time.Second, fmt.Sprintf("%d events at the hub", total), func() bool {
		return h.Journal().Stats().JournaledTotal >= uint64(total)
	})
	got := messageIDs(t, h.Journal())
	for _, id := range want {
		if got[id] != 1 {
			t.Errorf("message %s journaled %d times, want once", id, got[id])
		}
	}
	if len(got) != len(want) {
		t.Errorf("journal holds %d distinct message ids, want %d", len(got), len(want))
	}
	if n := h.Journal().Stats().JournaledTotal; n != uint64(total) {
		t.Errorf("journal holds %d events, want %d", n, total)
	}
}

func mqMessageIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return ids
}

// interopPeerPath is a third-party binary provisioned by scripts/interop.sh.
func interopPeerPath(t *testing.T, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		t.Fatalf("%s is not set: run `make interop` (scripts/interop.sh installs the peers and exports their paths)", env)
	}
	return p
}

// peerProc is a child process that is killed and reaped when the test ends.
type peerProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status; read after done is closed
}

func startPeerProc(t *testing.T, name string, cmd *exec.Cmd) *peerProc {
	t.Helper()
	// If the test binary dies (e.g. go test -timeout), the peer goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &peerProc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", name, cmd.Process.Pid)
		}
	})
	return p
}

func (p *peerProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

type mosquittoBroker struct {
	addr string
	out  *syncbuf.Buffer
	proc *peerProc
}

// startMosquitto runs mosquitto on a free loopback port with a config that
// keeps every QoS 1 message (see PEERS.md: the default queue limit drops
// them under a burst) and nothing on disk; scripts/mosquitto-conf.sh is the
// same config for humans.
func startMosquitto(t *testing.T) *mosquittoBroker {
	t.Helper()
	bin := interopPeerPath(t, "PLANTSYNC_MOSQUITTO")
	// The port is picked before mosquitto binds it; another process can
	// take it in between, so a bind failure is retried on a new port.
	for attempt := 1; ; attempt++ {
		addr := testkit.FreePort(t)
		_, port, _ := net.SplitHostPort(addr)
		conf := filepath.Join(t.TempDir(), "mosquitto.conf")
		lines := []string{
			"listener " + port + " 127.0.0.1",
			"allow_anonymous true",
			"max_queued_messages 0",
			"max_inflight_messages 0",
			"persistence false",
			"log_dest stderr",
			"connection_messages true",
		}
		if os.Geteuid() == 0 {
			// Dropping to the mosquitto user would clear the parent-death
			// signal that stops the broker with a crashed test binary.
			lines = append(lines, "user root")
		}
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out := &syncbuf.Buffer{}
		cmd := exec.Command(bin, "-c", conf)
		cmd.Stdout, cmd.Stderr = out, out
		m := &mosquittoBroker{addr: addr, out: out, proc: startPeerProc(t, "mosquitto", cmd)}
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				_ = c.Close()
				return m
			}
			if m.proc.exited() {
				if attempt < 3 && strings.Contains(out.String(), "Address already in use") {
					break
				}
				t.Fatalf("mosquitto exited before accepting connections (%v):\n%s", m.proc.err, out.Tail(20))
			}
			if time.Now().After(deadline) {
				t.Fatalf("mosquitto does not accept connections on %s after 10s:\n%s", addr, out.Tail(20))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (m *mosquittoBroker) hostPort() []string {
	host, port, _ := net.SplitHostPort(m.addr)
	return []string{"-h", host, "-p", port}
}

// mqLinePublisher is one `mosquitto_pub -l` process: every line written to its
// stdin is published with QoS 1.
type mqLinePublisher struct {
	proc  *peerProc
	stdin io.WriteCloser
	w     *bufio.Writer
	out   *syncbuf.Buffer
}

func startMQLinePublisher(t *testing.T, m *mosquittoBroker, topic string) *mqLinePublisher {
	t.Helper()
	args := append(m.hostPort(), "-q", "1", "-t", topic, "-l", "-i", fmt.Sprintf("interop-pub-%d", time.Now().UnixNano()))
	cmd := exec.Command(interopPeerPath(t, "PLANTSYNC_MOSQUITTO_PUB"), args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	return &mqLinePublisher{proc: startPeerProc(t, "mosquitto_pub", cmd), stdin: stdin, w: bufio.NewWriter(stdin), out: out}
}

// write queues one completion message; safe from one goroutine only.
func (p *mqLinePublisher) write(id string) error {
	if _, err := p.w.Write(testkit.CompletionJSON(id)); err != nil {
		return err
	}
	return p.w.WriteByte('\n')
}

func (p *mqLinePublisher) flush() error { return p.w.Flush() }

func (p *mqLinePublisher) line(t *testing.T, id string) {
	t.Helper()
	if err := p.write(id); err != nil {
		t.Fatalf("mosquitto_pub stdin: %v\n%s", err, p.out.Tail(20))
	}
}

// finish closes stdin, on which mosquitto_pub publishes what is left, waits
// for the broker's acks and exits; it must exit cleanly.
func (p *mqLinePublisher) finish(t *testing.T) {
	t.Helper()
	if err := p.w.Flush(); err != nil {
		t.Fatalf("mosquitto_pub stdin: %v\n%s", err, p.out.Tail(20))
	}
	if err := p.stdin.Close(); err != nil {
		t.Fatalf("mosquitto_pub stdin: %v", err)
	}
	select {
	case <-p.proc.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("mosquitto_pub still running 30s after its input ended:\n%s", p.out.Tail(20))
	}
	if p.proc.err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", p.proc.err, p.out.Tail(20))
	}
}

// mqObserver is a mosquitto_sub on the MES topics that records the message
// ids the broker delivered to it.
type mqObserver struct {
	mu    sync.Mutex
	seen  map[string]int
	probe int // probe messages seen
}

const mqProbeTopic = "plantsync/interop/probe"

func startMQObserver(t *testing.T, m *mosquittoBroker) *mqObserver {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := append(m.hostPort(), "-q", "1", "-v", "-t", "mes/+/+/completion", "-t", mqProbeTopic,
		"-i", fmt.Sprintf("interop-observer-%d", time.Now().UnixNano()))
	cmd := exec.Command(interopPeerPath(t, "PLANTSYNC_MOSQUITTO_SUB"), args...)
	errOut := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = w, errOut
	o := &mqObserver{seen: map[string]int{}}
	// Our own pipe rather than StdoutPipe, whose reads must end before Wait:
	// here Wait (in startPeerProc) and the reader run side by side.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			o.record(sc.Text())
		}
	}()
	// Registered before startPeerProc's cleanup, so it runs after the kill:
	// then the pipe's last writer is gone and the reader sees EOF.
	t.Cleanup(func() {
		_ = w.Close()
		<-readerDone
		_ = r.Close()
	})
	p := startPeerProc(t, "mosquitto_sub", cmd)
	_ = w.Close()

	// mosquitto_sub says nothing when its subscription is in place, so
	// publish probes on a topic the agent does not read until one arrives.
	pub := interopPeerPath(t, "PLANTSYNC_MOSQUITTO_PUB")
	deadline := time.Now().Add(10 * time.Second)
	for o.probes() == 0 {
		if p.exited() {
			t.Fatalf("mosquitto_sub exited (%v):\n%s", p.err, errOut.Tail(20))
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto_sub saw no probe within 10s:\n%s", errOut.Tail(20))
		}
		probe := exec.Command(pub, append(m.hostPort(), "-q", "1", "-t", mqProbeTopic, "-m", "probe")...)
		if out, err := probe.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub probe: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return o
}

func (o *mqObserver) record(line string) {
	topic, payload, _ := strings.Cut(line, " ")
	o.mu.Lock()
	defer o.mu.Unlock()
	if topic == mqProbeTopic {
		o.probe++
		return
	}
	var msg struct {
		MessageID string `json:"message_id"`
	}
	if json.Unmarshal([]byte(payload), &msg) == nil && msg.MessageID != "" {
		o.seen[msg.MessageID]++
	}
}

func (o *mqObserver) probes() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.probe
}

func (o *mqObserver) countOf(ids []string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, id := range ids {
		if o.seen[id] > 0 {
			n++
		}
	}
	return n
}

// waitFor waits until the broker has delivered every id to the observer:
// proof that mosquitto_pub's messages are at the broker.
func (o *mqObserver) waitFor(t *testing.T, ids []string) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, fmt.Sprintf("observer to see %d messages", len(ids)), func() bool {
		return o.countOf(ids) == len(ids)
	})
}
