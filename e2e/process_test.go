package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/internal/syncbuf"
	"github.com/plantsync/plantsync/internal/testkit"
)

// The process harness: plantsync-agent and plantsync-hub built from this
// tree and run as real processes, so a test can SIGKILL them where an
// in-process test could only call Shutdown.

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	if code == 0 {
		httpClient.CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left running after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// built holds the binaries, made once per test binary run.
var built struct {
	once       sync.Once
	dir        string
	agent, hub string
	err        error
}

// binaries builds plantsync-agent and plantsync-hub from this tree (static,
// like `make build`) the first time a test asks, and returns their paths.
func binaries(t testing.TB) (agentBin, hubBin string) {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "plantsync-e2e-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		start := time.Now()
		cmd := exec.Command(goTool(), "build", "-o", dir+string(os.PathSeparator),
			"github.com/plantsync/plantsync/agent/cmd/plantsync-agent",
			"github.com/plantsync/plantsync/hub/cmd/plantsync-hub")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		built.agent, built.hub = filepath.Join(dir, "plantsync-agent"), filepath.Join(dir, "plantsync-hub")
		fmt.Fprintf(os.Stderr, "e2e: built plantsync-agent and plantsync-hub in %s\n", time.Since(start).Round(time.Millisecond))
	})
	if built.err != nil {
		t.Fatalf("build binaries: %v", built.err)
	}
	return built.agent, built.hub
}

// goTool is the go command building the test binaries.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// extra holds the other binaries some tests need, each built once per
// test binary run, by name.
var extra struct {
	mu    sync.Mutex
	paths map[string]string
}

// goBinary builds pkg (static, with tags) the first time a test asks for
// name, into name under the binaries' folder, and returns its path.
func goBinary(t testing.TB, name, pkg string, tags ...string) string {
	t.Helper()
	binaries(t) // makes the folder the binaries live in
	extra.mu.Lock()
	defer extra.mu.Unlock()
	if p, ok := extra.paths[name]; ok {
		return p
	}
	out := filepath.Join(built.dir, name)
	cmd := exec.Command(goTool(), "build", "-tags", strings.Join(tags, ","), "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	if extra.paths == nil {
		extra.paths = map[string]string{}
	}
	extra.paths[name] = out
	return out
}

// proc is a binary that a test starts, stops, kills and restarts. Its
// output of every run is kept and logged if the test fails.
type proc struct {
	t    testing.TB
	name string
	bin  string
	args []string
	logs syncbuf.Buffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current run has exited
	runs int
	// runLog is the output of the current run only.
	runLog *syncbuf.Buffer
}

// maxLoggedOutput bounds what a failed test prints per process.
const maxLoggedOutput = 64 << 10

func newProc(t testing.TB, name, bin string, args ...string) *proc {
	p := &proc{t: t, name: name, bin: bin, args: args}
	t.Cleanup(func() {
		if p.Running() {
			p.Kill()
		}
		if t.Failed() {
			out := p.logs.String()
			if len(out) > maxLoggedOutput {
				out = "...\n" + out[len(out)-maxLoggedOutput:]
			}
			t.Logf("output of %s (%d runs):\n%s", p.name, p.runs, out)
		}
	})
	return p
}

// Start starts a new run; the previous one must have exited.
func (p *proc) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			p.t.Fatalf("%s: start while still running", p.name)
		}
	}
	p.runs++
	run := &syncbuf.Buffer{}
	fmt.Fprintf(&p.logs, "----- %s run %d at %s -----\n", p.name, p.runs, time.Now().Format("15:04:05.000"))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout = io.MultiWriter(&p.logs, run)
	cmd.Stderr = io.MultiWriter(&p.logs, run)
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("%s: start: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done, p.runLog = cmd, done, run
}

// Running reports whether the current run has not exited.
func (p *proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.done
}

// Kill sends SIGKILL to the current run and waits until it is gone.
func (p *proc) Kill() {
	p.t.Helper()
	cmd, done := p.current()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("%s: still running 10s after SIGKILL", p.name)
	}
}

// Stop sends SIGTERM and returns the exit code once the run has ended.
func (p *proc) Stop(within time.Duration) int {
	p.t.Helper()
	cmd, done := p.current()
	if cmd == nil {
		p.t.Fatalf("%s: stop before start", p.name)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(within):
		p.Kill()
		p.t.Fatalf("%s: did not stop within %s of SIGTERM", p.name, within)
	}
	return cmd.ProcessState.ExitCode()
}

// Wait waits for the current run to exit by itself and returns its exit
// code and its output.
func (p *proc) Wait(within time.Duration) (code int, output string) {
	p.t.Helper()
	cmd, done := p.current()
	select {
	case <-done:
	case <-time.After(within):
		p.Kill()
		p.t.Fatalf("%s: still running after %s", p.name, within)
	}
	return cmd.ProcessState.ExitCode(), p.runLog.String()
}

// exited returns an error with the run's output once the current run has
// ended; waiting loops check it so a crash is reported at once, not as a
// timeout.
func (p *proc) exited() error {
	cmd, done := p.current()
	select {
	case <-done:
		return fmt.Errorf("%s exited (%s):\n%s", p.name, cmd.ProcessState, p.runLog.String())
	default:
		return nil
	}
}

// writeYAML writes v as a config file.
func writeYAML(t testing.TB, path string, v any) {
	t.Helper()
	raw, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond every 20 ms until it returns nil, p exits or the
// deadline passes; the last error explains a timeout.
func waitFor(t testing.TB, p *proc, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if p != nil {
			if perr := p.exited(); perr != nil {
				t.Fatalf("waiting for %s: %v", what, perr)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", within, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// fetchJSON GETs url into v, with a bearer token unless token is empty;
// any status but 200 is an error.
func fetchJSON(url, token string, v any) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}

// hubProc is a plantsync-hub process on fixed loopback ports, so a
// restarted hub is found where the agent last saw it.
type hubProc struct {
	*proc
	GRPC, HTTP string // host:port
	Dir        string
}

// newHubProc writes a hub config (ports probed free now, storage in dir,
// TLS from p) without starting the hub.
func newHubProc(t testing.TB, p *testkit.PKI, dir string) *hubProc {
	t.Helper()
	_, hubBin := binaries(t)
	h := &hubProc{GRPC: testkit.FreePort(t), HTTP: testkit.FreePort(t), Dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "hub.yaml")
	writeYAML(t, cfgPath, map[string]any{
		"grpc": map[string]any{
			"listen": h.GRPC,
			"tls":    map[string]string{"cert": p.Paths.HubCert, "key": p.Paths.HubKey, "client_ca": p.Paths.CACert},
		},
		"http": map[string]any{
			"listen": h.HTTP,
			"auth":   map[string]string{"tokens_file": testkit.TokensFile(t, dir)},
		},
		"storage": map[string]any{"dir": filepath.Join(dir, "storage")},
		"pki":     map[string]any{"dir": p.Dir},
		"log":     map[string]string{"level": "info", "format": "json"},
	})
	h.proc = newProc(t, "plantsync-hub", hubBin, "run", "-config", cfgPath)
	return h
}

// URL is the base of the hub's HTTP API.
func (h *hubProc) URL() string { return "http://" + h.HTTP }

// Start runs the hub and waits until its API is healthy and its gRPC port
// accepts connections.
func (h *hubProc) Start() {
	h.t.Helper()
	h.proc.Start()
	waitFor(h.t, h.proc, 20*time.Second, "hub healthy", func() error {
		var body struct {
			Healthy bool `json:"healthy"`
		}
		if err := fetchJSON(h.URL()+"/healthz", "", &body); err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", h.GRPC, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// hubEvent is one element of GET /api/v1/events.
type hubEvent struct {
	Position uint64 `json:"position"`
	Producer string `json:"producer"`
	Epoch    string `json:"epoch"`
	Event    struct {
		ID             string            `json:"id"`
		Sequence       uint64            `json:"sequence,string"`
		Plant          string            `json:"plant"`
		Type           string            `json:"type"`
		Attributes     map[string]string `json:"attributes"`
		BufferOverflow *struct {
			Dropped []seqRange `json:"dropped"`
			Policy  string     `json:"policy"`
		} `json:"buffer_overflow"`
	} `json:"event"`
}

// seqRange is an inclusive range of producer sequences as the API shows it.
type seqRange struct {
	First uint64 `json:"first,string"`
	Last  uint64 `json:"last,string"`
}

// hubEvents pages through GET path (events or rejected) from the start.
func hubEvents(h *hubProc, path string) ([]hubEvent, error) {
	var all []hubEvent
	var after uint64
	for {
		var page struct {
			Events    []hubEvent `json:"events"`
			NextAfter uint64     `json:"next_after"`
		}
		if err := fetchJSON(fmt.Sprintf("%s%s?after=%d&limit=1000", h.URL(), path, after), testkit.ViewerToken, &page); err != nil {
			return nil, err
		}
		if len(page.Events) == 0 {
			return all, nil
		}
		all = append(all, page.Events...)
		after = page.NextAfter
	}
}

// hubAgent is one element of GET /api/v1/agents.
type hubAgent struct {
	ID              string `json:"id"`
	Epoch           string `json:"epoch"`
	LastSequence    uint64 `json:"last_sequence"`
	DuplicateEvents uint64 `json:"duplicate_events"`
	RejectedEvents  uint64 `json:"rejected_events"`
}

func hubAgentState(h *hubProc, id string) (hubAgent, error) {
	var body struct {
		Agents []hubAgent `json:"agents"`
	}
	if err := fetchJSON(h.URL()+"/api/v1/agents", testkit.ViewerToken, &body); err != nil {
		return hubAgent{}, err
	}
	for _, a := range body.Agents {
		if a.ID == id {
			return a, nil
		}
	}
	return hubAgent{}, fmt.Errorf("agent %s unknown to the hub", id)
}

// agentOptions shape an agent process's config.
type agentOptions struct {
	ID, Plant string
	StateDir  string
	Hub       string // gRPC address
	Broker    string // MQTT host:port; one MQTT source "mes" when set
	// Generator, when positive, adds a generator source of that many events.
	Generator int
	MaxBytes  int64  // 0: the default
	Overflow  string // "": the default (block)
}

// agentProc is a plantsync-agent process with its admin API on a fixed
// loopback port.
type agentProc struct {
	*proc
	Admin    string // host:port
	StateDir string
	ClientID string // MQTT client id, fixed across restarts
}

func newAgentProc(t testing.TB, p *testkit.PKI, o agentOptions) *agentProc {
	t.Helper()
	agentBin, _ := binaries(t)
	cert, key := p.Agent(t, o.ID, o.Plant)
	a := &agentProc{Admin: testkit.FreePort(t), StateDir: o.StateDir, ClientID: "plantsync-" + o.ID}
	var sources []map[string]any
	if o.Broker != "" {
		sources = append(sources, map[string]any{
			"name": "mes", "type": "mqtt",
			"brokers":       []string{"tcp://" + o.Broker},
			"client_id":     a.ClientID,
			"clean_session": false,
			"subscriptions": []map[string]any{{"topic": "mes/+/+/completion", "qos": 1, "event_type": "production.completion", "id_field": "message_id"}},
		})
	}
	if o.Generator > 0 {
		sources = append(sources, map[string]any{"name": "gen", "type": "generator", "count": o.Generator, "batch": 100})
	}
	buf := map[string]any{}
	if o.MaxBytes > 0 {
		buf["max_bytes"] = o.MaxBytes
	}
	if o.Overflow != "" {
		buf["overflow"] = o.Overflow
	}
	cfgPath := filepath.Join(o.StateDir+"-config", "agent.yaml")
	writeYAML(t, cfgPath, map[string]any{
		"agent": map[string]string{"id": o.ID, "plant": o.Plant, "state_dir": o.StateDir},
		"uplink": map[string]any{
			"hub":             o.Hub,
			"tls":             map[string]string{"ca": p.Paths.CACert, "cert": cert, "key": key, "server_name": "localhost"},
			"backoff_initial": "50ms",
			"backoff_max":     "500ms",
			"status_interval": "500ms",
		},
		"buffer":  buf,
		"sources": sources,
		"metrics": map[string]string{"listen": a.Admin},
		"log":     map[string]string{"level": "info", "format": "json"},
	})
	a.proc = newProc(t, "plantsync-agent", agentBin, "run", "-config", cfgPath)
	return a
}

// Status reads the agent's /api/v1/status.
func (a *agentProc) Status() (agent.Status, error) {
	var s agent.Status
	err := fetchJSON("http://"+a.Admin+"/api/v1/status", "", &s)
	return s, err
}

// WaitStatus polls the agent's status until cond returns nil.
func (a *agentProc) WaitStatus(within time.Duration, what string, cond func(agent.Status) error) agent.Status {
	a.t.Helper()
	var last agent.Status
	waitFor(a.t, a.proc, within, what, func() error {
		s, err := a.Status()
		if err != nil {
			return err
		}
		last = s
		return cond(s)
	})
	return last
}

// WaitRunning waits until the MQTT source "mes" is subscribed: the broker
// delivers only to subscribed sessions.
func (a *agentProc) WaitRunning(within time.Duration) agent.Status {
	a.t.Helper()
	return a.WaitStatus(within, "mqtt source running", func(s agent.Status) error {
		if st := s.Sources["mes"].State; st != "running" {
			return fmt.Errorf("source mes is %q", st)
		}
		return nil
	})
}

// metric reads one sample of the agent's /metrics by its full name with
// labels, e.g. plantsync_agent_mqtt_mapped_total{source="mes"}.
func (a *agentProc) metric(name string) (float64, error) {
	resp, err := httpClient.Get("http://" + a.Admin + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				return 0, fmt.Errorf("metric %s: %q: %w", name, v, err)
			}
			return f, nil
		}
	}
	return 0, errors.New("metric " + name + " not exposed")
}
