//go:build linux

// Command mqttbench measures the agent's MQTT source: QoS 1 messages of
// 200 bytes of JSON, one connection, acknowledged after the buffer commit,
// with the uplink streaming to a hub. Broker, agent and hub run as their own
// processes; the publisher and the baseline subscriber run in this one.
//
// For each broker (Debian's mosquitto, and mochi-mqtt in this process, the
// broker of `make test`; a fresh one for every run) it prints:
//
//	ceiling  a plain paho subscriber with auto-ack through the same broker:
//	         messages/s from the first publish to the last receipt
//	agent    the plantsync-agent process: messages/s from the first publish
//	         to the last acknowledgement, p50/p99 of its ack latency
//	         (receipt to PUBACK, buffer commit included, from its histogram),
//	         its CPU-seconds per 100 000 messages, and when the hub had them
//
// next to the targets (>= 0.8x the ceiling, p99 <= 25 ms, <= 3 CPU-s per
// 100k). It is a benchmark, not a test.
//
//	go run ./e2e/cmd/mqttbench [-n 200000] [-runs 3] [-mosquitto /usr/sbin/mosquitto] [-bin DIR] [-keep]
//	    [-cpuprofile agent.prof] [-hubprofile hub.prof]
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/plantsync/plantsync/e2e/internal/benchkit"
)

const (
	agentID      = "bench-agent"
	plantID      = "bench"
	payloadBytes = 200
	topic        = "bench/DE-01/L1/completion"
)

type options struct {
	n         int
	runs      int
	mosquitto string
	bin       string
	keep      bool
	profile   string
	hubProf   string
	hubNice   int
	pauseHub  bool
}

func main() { os.Exit(run()) }

func run() int {
	var o options
	flag.IntVar(&o.n, "n", 200_000, "messages per run")
	flag.IntVar(&o.runs, "runs", 3, "runs per measurement; the table shows the median")
	flag.StringVar(&o.mosquitto, "mosquitto", "/usr/sbin/mosquitto", "mosquitto binary (apt-get install mosquitto)")
	flag.StringVar(&o.bin, "bin", "", "folder with plantsync-agent and plantsync-hub (default: build them into the temp folder)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp folder (configs, logs)")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the agent of the first mosquitto run here (plantsync-agent run -cpuprofile)")
	flag.IntVar(&o.hubNice, "hubnice", 0, "run the hub at this nice level (1-19): on a shared machine it then yields the CPU to broker and agent, as a hub on its own machine would; the report says so")
	flag.BoolVar(&o.pauseHub, "pausehub", false, "diagnostic: SIGSTOP the hub during the flooded phase (the uplink stalls, the agent stores and forwards): the agent's own capacity on a machine it does not share with a hub; not the issue's set-up, and the report says so")
	flag.StringVar(&o.hubProf, "hubprofile", "", "write a CPU profile of the hub of the first mosquitto run here")
	flag.Parse()
	b, err := newBench(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		return 1
	}
	defer b.cleanup()
	res, err := b.measure()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mqttbench:", err)
		return 1
	}
	b.report(os.Stdout, res)
	return 0
}

type bench struct {
	o           options
	root        string
	agent, hub  string
	pki         string
	agentTLS    string
	mu          sync.Mutex
	procs       []*proc
	httpc       *http.Client
	brokerClean func()
	mosquittos  int // started so far: each run's broker gets its own folder
}

func newBench(o options) (*bench, error) {
	root, err := os.MkdirTemp("", "plantsync-mqttbench-")
	if err != nil {
		return nil, err
	}
	b := &bench{o: o, root: root, httpc: &http.Client{Timeout: 2 * time.Second}}
	bin := o.bin
	if bin == "" {
		bin = filepath.Join(root, "bin")
		progress("building plantsync-agent and plantsync-hub")
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin+string(os.PathSeparator),
			"github.com/plantsync/plantsync/agent/cmd/plantsync-agent", "github.com/plantsync/plantsync/hub/cmd/plantsync-hub")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.cleanup()
			return nil, fmt.Errorf("go build: %w\n%s", err, out)
		}
	}
	b.agent, b.hub = filepath.Join(bin, "plantsync-agent"), filepath.Join(bin, "plantsync-hub")
	b.pki, b.agentTLS = filepath.Join(root, "pki"), filepath.Join(root, "agent-tls")
	if err := os.MkdirAll(b.agentTLS, 0o700); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"pki", "init", "-dir", b.pki, "-name", "bench"},
		{"pki", "issue-agent", "-dir", b.pki, "-id", agentID, "-plant", plantID, "-out", b.agentTLS},
	} {
		if out, err := exec.Command(b.hub, args...).CombinedOutput(); err != nil {
			b.cleanup()
			return nil, fmt.Errorf("plantsync-hub %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	return b, nil
}

func (b *bench) cleanup() {
	b.mu.Lock()
	procs := b.procs
	b.mu.Unlock()
	for _, p := range procs {
		p.stop()
	}
	if b.brokerClean != nil {
		b.brokerClean()
	}
	if b.o.keep {
		fmt.Fprintln(os.Stderr, "mqttbench: kept", b.root)
		return
	}
	_ = os.RemoveAll(b.root)
}

// broker is where a measurement publishes.
type broker struct {
	name string
	addr string
	stop func()
	proc *proc // nil: the broker runs in this process
}

func (b *bench) startMosquitto() (*broker, error) {
	addr := benchkit.FreeAddr()
	_, port, _ := net.SplitHostPort(addr)
	b.mosquittos++
	dir := filepath.Join(b.root, fmt.Sprintf("mosquitto-broker-%d", b.mosquittos))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	lines := []string{"listener " + port + " 127.0.0.1", "allow_anonymous true", "max_queued_messages 0",
		"max_inflight_messages 0", "persistence false", "log_dest stderr", "log_type error", "log_type warning"}
	if os.Geteuid() == 0 {
		lines = append(lines, "user root")
	}
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	p, err := b.start("mosquitto", filepath.Join(dir, "mosquitto.log"), b.o.mosquitto, "-c", conf)
	if err != nil {
		return nil, err
	}
	if err := waitDial(addr, p); err != nil {
		return nil, err
	}
	return &broker{name: "mosquitto", addr: addr, stop: p.stop, proc: p}, nil
}

func startMochi() (*broker, error) {
	// mochi drops a publish to a client whose write queue is full (it
	// stays in flight and goes out only after a reconnect): make the
	// queue and the in-flight window hold a whole run.
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = 1 << 20
	caps.MaximumInflight = math.MaxUint16
	s := mochi.New(&mochi.Options{Capabilities: caps, Logger: slog.New(slog.DiscardHandler)})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	l := listeners.NewTCP(listeners.Config{ID: "bench", Address: "127.0.0.1:0"})
	if err := s.AddListener(l); err != nil {
		return nil, err
	}
	if err := s.Serve(); err != nil {
		return nil, err
	}
	return &broker{name: "mochi (in the bench process)", addr: l.Address(), stop: func() { _ = s.Close() }}, nil
}

type phase struct {
	rate     float64 // messages/s
	p50, p99 float64 // seconds
	cpu100k  float64 // CPU-seconds per 100k messages (agent only)
	hubAfter float64 // seconds from the first publish until the hub had all
	// CPU-seconds per 100k messages of the others during the agent's
	// flooded phase: the hub, the broker (when in its own process) and
	// this process (the publisher, and mochi when it is the broker)
	hubCPU, brokerCPU, benchCPU float64
	// paced: the agent fed at 0.8x this run's ceiling
	pacedRate, pacedP50, pacedP99 float64
	// light: at 0.4x the ceiling (half the target rate), where the
	// machine is not saturated: the ack latency of the commits alone
	lightRate, lightP50, lightP99 float64
	// commitP50/P99: the buffer's group commits in the light phase
	commitP50, commitP99 float64
}

type results struct {
	brokers []string
	ceiling map[string][]phase
	agent   map[string][]phase
}

func (b *bench) measure() (*results, error) {
	res := &results{ceiling: map[string][]phase{}, agent: map[string][]phase{}}
	for _, start := range []func() (*broker, error){b.startMosquitto, startMochi} {
		for r := 1; r <= b.o.runs; r++ {
			// A fresh broker per run: the agent's persistent session of an
			// earlier run would otherwise have every later message queued
			// for it, a growing load on the broker run after run.
			br, err := start()
			if err != nil {
				return nil, err
			}
			b.brokerClean = br.stop
			if r == 1 {
				res.brokers = append(res.brokers, br.name)
			}
			progress("%s run %d/%d: plain subscriber", br.name, r, b.o.runs)
			c, err := b.runCeiling(br, r)
			if err != nil {
				return nil, fmt.Errorf("%s ceiling: %w", br.name, err)
			}
			res.ceiling[br.name] = append(res.ceiling[br.name], c)
			progress("  %s msg/s, receipt latency p99 %.1f ms", benchkit.Thousands(c.rate, ' '), c.p99*1000)
			progress("%s run %d/%d: plantsync-agent", br.name, r, b.o.runs)
			a, err := b.runAgent(br, r, 0.8*c.rate)
			if err != nil {
				return nil, fmt.Errorf("%s agent: %w", br.name, err)
			}
			res.agent[br.name] = append(res.agent[br.name], a)
			progress("  %s msg/s, ack p99 %.1f ms, %.2f CPU-s/100k, hub had all after %.1fs; paced at %s msg/s: ack p99 %.1f ms; at %s msg/s: ack p99 %.1f ms",
				benchkit.Thousands(a.rate, ' '), a.p99*1000, a.cpu100k, a.hubAfter, benchkit.Thousands(a.pacedRate, ' '), a.pacedP99*1000, benchkit.Thousands(a.lightRate, ' '), a.lightP99*1000)
			progress("  CPU-s/100k of the others meanwhile: hub %.2f, broker %.2f, bench process (publisher%s) %.2f",
				a.hubCPU, a.brokerCPU, map[bool]string{true: ", broker", false: ""}[br.proc == nil], a.benchCPU)
			br.stop()
			b.brokerClean = nil
		}
	}
	return res, nil
}

// payload is a 200-byte MES completion with its publish time.
func payload(i int, now time.Time) []byte {
	p := fmt.Appendf(nil, `{"message_id":"b-%08d","order":"PO-1001","item":"P-4711","quantity":"12","unit":"EA","work_center":"L1-M1","occurred_at":"2026-11-27T10:00:00Z","ts":%d,"pad":"`, i, now.UnixNano())
	for len(p) < payloadBytes-2 {
		p = append(p, 'x')
	}
	return append(p, '"', '}')
}

// publishAll publishes n messages with QoS 1 from one connection, keeping
// up to a window of them unacknowledged, and returns when the broker has
// acknowledged all.
func publishAll(addr string, n int) (time.Time, error) { return publishPaced(addr, 0, n, 0) }

// publishPaced publishes ids first..first+n-1, at rate messages/s (0: as
// fast as the broker takes them).
func publishPaced(addr string, first, n int, rate float64) (time.Time, error) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(fmt.Sprintf("bench-pub-%d", time.Now().UnixNano())).SetAutoReconnect(false).SetWriteTimeout(30 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return time.Time{}, fmt.Errorf("publisher connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	const window = 2000
	toks := make([]paho.Token, 0, window)
	start := time.Now()
	defer func() { progress("  published %d in %.2fs", n, time.Since(start).Seconds()) }()
	for i := 0; i < n; i++ {
		if rate > 0 && i%50 == 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		toks = append(toks, c.Publish(topic, 1, false, payload(first+i, time.Now())))
		if len(toks) == window {
			for _, t := range toks {
				if !t.WaitTimeout(60*time.Second) || t.Error() != nil {
					return start, fmt.Errorf("publish: %v", t.Error())
				}
			}
			toks = toks[:0]
		}
	}
	for _, t := range toks {
		if !t.WaitTimeout(60*time.Second) || t.Error() != nil {
			return start, fmt.Errorf("publish: %v", t.Error())
		}
	}
	return start, nil
}

// runCeiling is a plain paho subscriber, auto-ack, on the same broker.
func (b *bench) runCeiling(br *broker, run int) (phase, error) {
	n := b.o.n
	lat := make([]float64, 0, n)
	var got atomic.Int64
	var last atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	opts := paho.NewClientOptions().AddBroker("tcp://" + br.addr).SetClientID(fmt.Sprintf("bench-sub-%d", run)).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(true)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return phase{}, fmt.Errorf("subscriber connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	tok := c.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		now := time.Now()
		if ts := publishTS(m.Payload()); ts > 0 {
			mu.Lock()
			lat = append(lat, now.Sub(time.Unix(0, ts)).Seconds())
			mu.Unlock()
		}
		last.Store(now.UnixNano())
		if got.Add(1) == int64(n) {
			once.Do(func() { close(done) })
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return phase{}, fmt.Errorf("subscribe: %v", tok.Error())
	}
	start, err := publishAll(br.addr, n)
	if err != nil {
		return phase{}, err
	}
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		return phase{}, fmt.Errorf("subscriber got %d of %d", got.Load(), n)
	}
	elapsed := time.Unix(0, last.Load()).Sub(start).Seconds()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	return phase{rate: float64(n) / elapsed, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99)}, nil
}

func publishTS(p []byte) int64 {
	i := bytes.Index(p, []byte(`"ts":`))
	if i < 0 {
		return 0
	}
	j := i + 5
	k := j
	for k < len(p) && p[k] >= '0' && p[k] <= '9' {
		k++
	}
	v, _ := strconv.ParseInt(string(p[j:k]), 10, 64)
	return v
}

func (b *bench) runAgent(br *broker, run int, pace float64) (phase, error) {
	n := b.o.n
	dir := filepath.Join(b.root, fmt.Sprintf("%s-%d", strings.Fields(br.name)[0], run))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return phase{}, err
	}
	grpcAddr, httpAddr, admin := benchkit.FreeAddr(), benchkit.FreeAddr(), benchkit.FreeAddr()
	var hubProf string
	if b.o.hubProf != "" && run == 1 && br.name == "mosquitto" {
		hubProf = b.o.hubProf
	}
	hub, err := b.startHub(dir, grpcAddr, httpAddr, hubProf)
	if err != nil {
		return phase{}, err
	}
	defer hub.stop()
	if err := waitDial(grpcAddr, hub); err != nil {
		return phase{}, err
	}
	var agProf string
	if b.o.profile != "" && run == 1 && br.name == "mosquitto" {
		agProf = b.o.profile
	}
	ag, err := b.startAgent(dir, grpcAddr, admin, br.addr, run, agProf)
	if err != nil {
		return phase{}, err
	}
	defer ag.stop()
	if err := b.poll(30*time.Second, ag, "agent subscribed", func() bool {
		var st struct {
			Sources map[string]struct {
				State string `json:"state"`
			} `json:"sources"`
		}
		return getJSON(b.httpc, "http://"+admin+"/api/v1/status", &st) == nil && st.Sources["mes"].State == "running"
	}); err != nil {
		return phase{}, err
	}
	before, err := scrape(b.httpc, "http://"+admin+"/metrics")
	if err != nil {
		return phase{}, err
	}
	cpu0 := ag.cpu()
	hub0, self0 := hub.cpu(), selfCPU()
	var broker0 time.Duration
	if br.proc != nil {
		broker0 = br.proc.cpu()
	}
	if b.o.pauseHub {
		if err := hub.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			return phase{}, err
		}
	}
	pubErr := make(chan error, 1)
	var start time.Time
	var startMu sync.Mutex
	startMu.Lock()
	go func() {
		s, err := publishAll(br.addr, n)
		start = s
		startMu.Unlock()
		pubErr <- err
	}()
	doneAt, err := b.waitAcked(ag, admin, before.count(ackCount)+float64(n), "agent acknowledged every message")
	if err != nil {
		return phase{}, err
	}
	cpu := ag.cpu() - cpu0
	if b.o.pauseHub {
		if err := hub.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			return phase{}, err
		}
	}
	hubCPU, benchCPU := hub.cpu()-hub0, selfCPU()-self0
	var brokerCPU time.Duration
	if br.proc != nil {
		brokerCPU = br.proc.cpu() - broker0
	}
	if err := <-pubErr; err != nil {
		return phase{}, err
	}
	startMu.Lock()
	elapsed := doneAt.Sub(start).Seconds()
	startMu.Unlock()
	after, err := scrape(b.httpc, "http://"+admin+"/metrics")
	if err != nil {
		return phase{}, err
	}
	if err := b.poll(180*time.Second, hub, "hub journaled every message", func() bool {
		m, err := scrape(b.httpc, "http://"+httpAddr+"/metrics")
		return err == nil && m.count("plantsync_hub_journal_last_position") >= float64(n)
	}); err != nil {
		return phase{}, err
	}
	hubAfter := time.Since(start).Seconds()
	hist := after.histogram("plantsync_agent_mqtt_ack_latency_seconds", before)
	ph := phase{
		rate: float64(n) / elapsed, p50: hist.quantile(0.5), p99: hist.quantile(0.99),
		cpu100k: cpu.Seconds() * 100_000 / float64(n), hubAfter: hubAfter,
		hubCPU: hubCPU.Seconds() * 100_000 / float64(n), brokerCPU: brokerCPU.Seconds() * 100_000 / float64(n),
		benchCPU: benchCPU.Seconds() * 100_000 / float64(n),
	}

	// Paced: half as many messages at 0.8x the ceiling, the latency target's
	// operating point (an agent that cannot keep up shows it in the p99),
	// then at 0.4x, where the machine is not saturated.
	m := n / 2
	prev := after
	for i, f := range []float64{1, 0.5} {
		start := time.Now()
		if _, err := publishPaced(br.addr, n+i*m, m, pace*f); err != nil {
			return phase{}, err
		}
		done, err := b.waitAcked(ag, admin, prev.count(ackCount)+float64(m), "agent acknowledged the paced messages")
		if err != nil {
			return phase{}, err
		}
		cur, err := scrape(b.httpc, "http://"+admin+"/metrics")
		if err != nil {
			return phase{}, err
		}
		h := cur.histogram("plantsync_agent_mqtt_ack_latency_seconds", prev)
		rate, p50, p99 := float64(m)/done.Sub(start).Seconds(), h.quantile(0.5), h.quantile(0.99)
		if i == 0 {
			ph.pacedRate, ph.pacedP50, ph.pacedP99 = rate, p50, p99
		} else {
			ph.lightRate, ph.lightP50, ph.lightP99 = rate, p50, p99
			c := cur.histogram("plantsync_agent_buffer_commit_seconds", prev)
			ph.commitP50, ph.commitP99 = c.quantile(0.5), c.quantile(0.99)
		}
		prev = cur
	}
	return ph, nil
}

const ackCount = "plantsync_agent_mqtt_ack_latency_seconds_count"

// waitAcked polls the agent's ack counter until it reaches target and
// returns when it did, interpolated between the last two scrapes. Scraping
// costs the agent CPU (a whole registry gather), so it polls every 50 ms,
// not in a tight loop; the interpolation keeps the figure's precision.
func (b *bench) waitAcked(ag *proc, admin string, target float64, what string) (time.Time, error) {
	var prevT time.Time
	var prevC float64
	var at time.Time
	err := b.pollEvery(180*time.Second, 50*time.Millisecond, ag, what, func() bool {
		m, err := scrape(b.httpc, "http://"+admin+"/metrics")
		if err != nil {
			return false
		}
		now, c := time.Now(), m.count(ackCount)
		if c < target {
			prevT, prevC = now, c
			return false
		}
		at = now
		if !prevT.IsZero() && c > prevC {
			at = prevT.Add(time.Duration(float64(now.Sub(prevT)) * (target - prevC) / (c - prevC)))
		}
		return true
	})
	return at, err
}

func (b *bench) startHub(dir, grpcAddr, httpAddr, profile string) (*proc, error) {
	cfg := filepath.Join(dir, "hub.yaml")
	y := fmt.Sprintf("grpc:\n  listen: %q\n  tls: {cert: %q, key: %q, client_ca: %q}\nhttp:\n  listen: %q\nstorage:\n  dir: %q\npki:\n  dir: %q\nlog:\n  level: warn\n",
		grpcAddr, filepath.Join(b.pki, "hub.crt"), filepath.Join(b.pki, "hub.key"), filepath.Join(b.pki, "ca.crt"), httpAddr, filepath.Join(dir, "hub-storage"), b.pki)
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		return nil, err
	}
	args := []string{"run", "-config", cfg}
	if profile != "" {
		args = append(args, "-cpuprofile", profile)
	}
	bin := b.hub
	if b.o.hubNice > 0 {
		args = append([]string{"-n", strconv.Itoa(b.o.hubNice), bin}, args...)
		bin = "nice"
	}
	return b.start("hub", filepath.Join(dir, "hub.log"), bin, args...)
}

func (b *bench) startAgent(dir, hubAddr, admin, brokerAddr string, run int, profile string) (*proc, error) {
	cfg, err := b.writeAgentConfig(dir, hubAddr, admin, brokerAddr, run)
	if err != nil {
		return nil, err
	}
	args := []string{"run", "-config", cfg}
	if profile != "" {
		args = append(args, "-cpuprofile", profile)
	}
	return b.start("agent", filepath.Join(dir, "agent.log"), b.agent, args...)
}

func (b *bench) writeAgentConfig(dir, hubAddr, admin, brokerAddr string, run int) (string, error) {
	cfg := filepath.Join(dir, "agent.yaml")
	y := fmt.Sprintf(`agent: {id: %s, plant: %s, state_dir: %q}
uplink:
  hub: %q
  tls: {ca: %q, cert: %q, key: %q}
  backoff_initial: 50ms
  backoff_max: 250ms
sources:
  - name: mes
    type: mqtt
    brokers: ["tcp://%s"]
    client_id: bench-agent-%d
    subscriptions:
      - {topic: "bench/{plant}/{line}/completion", qos: 1, event_type: production.completion, id_field: message_id}
metrics: {listen: %q}
log: {level: warn}
`, agentID, plantID, filepath.Join(dir, "agent-state"), hubAddr, filepath.Join(b.agentTLS, "ca.crt"),
		filepath.Join(b.agentTLS, agentID+".crt"), filepath.Join(b.agentTLS, agentID+".key"), brokerAddr, run, admin)
	if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
		return "", err
	}
	return cfg, nil
}

// proc is a child process.
type proc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
}

func (b *bench) start(name, logPath, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread() // Pdeathsig follows the spawning thread
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// cpu is the process's user+system time from /proc/PID/stat.
func (p *proc) cpu() time.Duration {
	return benchkit.ProcCPU(p.cmd.Process.Pid)
}

func selfCPU() time.Duration { return benchkit.ProcCPU(os.Getpid()) }

func (b *bench) poll(within time.Duration, p *proc, what string, cond func() bool) error {
	return b.pollEvery(within, 10*time.Millisecond, p, what, cond)
}

func (b *bench) pollEvery(within, every time.Duration, p *proc, what string, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if p.exited() {
			return fmt.Errorf("%s: %s exited; log %s:\n%s", what, p.name, p.log, benchkit.Tail(p.log, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s; log %s:\n%s", within, what, p.log, benchkit.Tail(p.log, 20))
		}
		time.Sleep(every)
	}
	return nil
}

func waitDial(addr string, p *proc) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			return c.Close()
		}
		if p.exited() {
			return fmt.Errorf("%s exited:\n%s", p.name, benchkit.Tail(p.log, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not listen on %s", p.name, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getJSON(c *http.Client, url string, v any) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// samples are one /metrics scrape: name{labels} -> value.
type samples map[string]float64

func scrape(c *http.Client, url string) (samples, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := samples{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// count sums the samples of a metric over its label sets.
func (s samples) count(name string) float64 {
	var sum float64
	for k, v := range s {
		if k == name || strings.HasPrefix(k, name+"{") {
			sum += v
		}
	}
	return sum
}

type histogram struct {
	bounds []float64
	counts []float64 // cumulative
}

// histogram is the difference of a histogram between two scrapes.
func (s samples) histogram(name string, before samples) histogram {
	var h histogram
	type b struct{ le, n float64 }
	var bs []b
	for k, v := range s {
		if !strings.HasPrefix(k, name+"_bucket{") {
			continue
		}
		i := strings.Index(k, `le="`)
		if i < 0 {
			continue
		}
		le := k[i+4:]
		le = le[:strings.IndexByte(le, '"')]
		f, err := strconv.ParseFloat(le, 64)
		if err != nil {
			f = math.Inf(1)
		}
		bs = append(bs, b{f, v - before[k]})
	}
	slices.SortFunc(bs, func(x, y b) int {
		switch {
		case x.le < y.le:
			return -1
		case x.le > y.le:
			return 1
		}
		return 0
	})
	for _, x := range bs {
		h.bounds = append(h.bounds, x.le)
		h.counts = append(h.counts, x.n)
	}
	return h
}

// quantile interpolates linearly inside the bucket, as Prometheus does.
func (h histogram) quantile(q float64) float64 {
	if len(h.counts) == 0 || h.counts[len(h.counts)-1] == 0 {
		return math.NaN()
	}
	rank := q * h.counts[len(h.counts)-1]
	lo, prev := 0.0, 0.0
	for i, c := range h.counts {
		if c >= rank {
			if math.IsInf(h.bounds[i], 1) {
				return lo
			}
			return lo + (h.bounds[i]-lo)*(rank-prev)/(c-prev)
		}
		lo, prev = h.bounds[i], c
	}
	return lo
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mqttbench: "+format+"\n", args...)
}

func (b *bench) report(w io.Writer, r *results) {
	field := func(ps []phase, f func(phase) float64) float64 {
		v := make([]float64, len(ps))
		for i, p := range ps {
			v[i] = f(p)
		}
		return benchkit.Median(v)
	}
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	fmt.Fprintf(w, "\nMQTT source, QoS 1, one connection, %d-byte JSON, ack after the buffer commit, uplink to a hub; %d messages per run, median of %d runs, %d CPUs\n",
		payloadBytes, b.o.n, b.o.runs, runtime.NumCPU())
	if b.o.pauseHub {
		fmt.Fprintln(w, "DIAGNOSTIC (-pausehub): the hub was stopped (SIGSTOP) during the flooded phase; the uplink stalled and the agent stored and forwarded. Not the benchmark's set-up: its verdicts do not count")
	}
	if b.o.hubNice > 0 {
		fmt.Fprintf(w, "the hub ran at nice %d: it yields the CPU to broker, publisher and agent and catches up after\n", b.o.hubNice)
	}
	fmt.Fprintln(w)
	for _, name := range r.brokers {
		c, a := r.ceiling[name], r.agent[name]
		ceil := field(c, func(p phase) float64 { return p.rate })
		rate := field(a, func(p phase) float64 { return p.rate })
		p99 := field(a, func(p phase) float64 { return p.p99 })
		cpu := field(a, func(p phase) float64 { return p.cpu100k })
		fmt.Fprintf(w, "broker: %s\n", name)
		fmt.Fprintf(w, "  plain paho subscriber, auto-ack   %10s msg/s   receipt latency p50 %.1f ms, p99 %.1f ms\n",
			benchkit.Thousands(ceil, ' '), field(c, func(p phase) float64 { return p.p50 })*1000, field(c, func(p phase) float64 { return p.p99 })*1000)
		fmt.Fprintf(w, "  plantsync-agent, ack after commit %10s msg/s   %.2fx the ceiling (target >= 0.8)  %s\n", benchkit.Thousands(rate, ' '), rate/ceil, verdict(rate >= 0.8*ceil))
		pacedP99 := field(a, func(p phase) float64 { return p.pacedP99 })
		fmt.Fprintf(w, "  agent ack latency, flooded        p50 %.1f ms, p99 %.1f ms (queueing behind the commits)\n",
			field(a, func(p phase) float64 { return p.p50 })*1000, p99*1000)
		fmt.Fprintf(w, "  agent ack latency at 0.8x ceiling p50 %.1f ms, p99 %.1f ms at %s msg/s (target <= 25 ms)  %s\n",
			field(a, func(p phase) float64 { return p.pacedP50 })*1000, pacedP99*1000,
			benchkit.Thousands(field(a, func(p phase) float64 { return p.pacedRate }), ' '), verdict(pacedP99 <= 0.025))
		fmt.Fprintf(w, "  agent ack latency at 0.4x ceiling p50 %.1f ms, p99 %.1f ms at %s msg/s (machine not saturated)\n",
			field(a, func(p phase) float64 { return p.lightP50 })*1000, field(a, func(p phase) float64 { return p.lightP99 })*1000,
			benchkit.Thousands(field(a, func(p phase) float64 { return p.lightRate }), ' '))
		fmt.Fprintf(w, "    its buffer group commits        p50 %.1f ms, p99 %.1f ms\n",
			field(a, func(p phase) float64 { return p.commitP50 })*1000, field(a, func(p phase) float64 { return p.commitP99 })*1000)
		fmt.Fprintf(w, "  agent CPU                         %.2f CPU-s per 100 000 messages (target <= 3)  %s\n", cpu, verdict(cpu <= 3))
		fmt.Fprintf(w, "  hub had every message after      %.1f s\n", field(a, func(p phase) float64 { return p.hubAfter }))
		fmt.Fprintf(w, "  CPU-s per 100k of the others     hub %.2f, broker %.2f, bench process %.2f (publisher; mochi too when it is the broker)\n",
			field(a, func(p phase) float64 { return p.hubCPU }), field(a, func(p phase) float64 { return p.brokerCPU }),
			field(a, func(p phase) float64 { return p.benchCPU }))
		var runs []string
		for i := range a {
			runs = append(runs, fmt.Sprintf("%s/%s", benchkit.Thousands(c[i].rate, ' '), benchkit.Thousands(a[i].rate, ' ')))
		}
		fmt.Fprintf(w, "  runs (ceiling/agent msg/s): %s\n\n", strings.Join(runs, ", "))
	}
}
