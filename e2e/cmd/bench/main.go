//go:build linux

// Command bench is `make bench`: it measures a plantsync agent and hub
// running as separate processes (the binaries `make build` puts in bin/),
// talking mTLS gRPC over loopback, with fsync'd bbolt commits on both sides
// and the agent's generator source producing 200-byte events as fast as the
// buffer commits them. It prints the median of several runs of
//
//	a. durable agent ingest: events/s committed to the agent buffer, no hub
//	b. end to end: events/s acknowledged by the hub after its journal commit
//	c. drain: seconds from starting the hub until a 1M-event backlog is acked
//	d. the agent's RssAnon (/proc/PID/status) with that backlog buffered
//
// next to the targets for a 2-core machine, with PASS or MISS and every
// run's value. It is a benchmark, not a test: it exits non-zero only when a
// run could not be measured (a process died, a phase timed out).
//
//	go run ./e2e/cmd/bench -bin bin [-runs 3] [-events 300000] [-backlog 1000000]
//
// Each run starts from empty state folders under one temporary folder, which
// is removed at the end (or on Ctrl-C) after every child process is stopped.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/plantsync/plantsync/e2e/internal/benchkit"
	"github.com/plantsync/plantsync/internal/pki"
)

const (
	agentID      = "bench-agent"
	plantID      = "bench"
	payloadBytes = 200
	// pollEvery bounds the timing error of a phase to about one interval
	// at each end; polling faster would steal CPU from the measured
	// processes on a 2-core machine.
	pollEvery = 10 * time.Millisecond
	// stopGrace is how long a child gets to stop after SIGTERM. The hub
	// drains its pipeline on shutdown, which after a big run takes longer
	// than the bench should wait for state it throws away.
	stopGrace = 5 * time.Second
)

type options struct {
	bin     string
	runs    int
	events  int64
	backlog int64
	dir     string
	keep    bool
	timeout time.Duration
	// noWorkflows runs the hub without pipeline workflows, so only ingest
	// and journal (and the pipeline's scan of the journal) cost CPU.
	noWorkflows bool
}

func main() { os.Exit(run()) }

func run() int {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "folder holding plantsync-agent and plantsync-hub (built by `make build`)")
	flag.IntVar(&o.runs, "runs", 3, "runs of every measurement; the table shows their median")
	flag.Int64Var(&o.events, "events", 300_000, "events per run of the ingest (a) and end-to-end (b) measurements")
	flag.Int64Var(&o.backlog, "backlog", 1_000_000, "backlog per run of the drain (c) and memory (d) measurements")
	flag.StringVar(&o.dir, "dir", "", "parent of the temporary state folder (default: the system temp folder); put it on the disk you mean to measure")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary folder (configs, logs, bbolt files) for inspection")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "give up on one phase of a run after this long")
	flag.BoolVar(&o.noWorkflows, "no-workflows", false, "run the hub with an empty pipeline.workflows list instead of the shipped workflows, to see what ingest and journal cost without the pipeline's outbox work")
	flag.Parse()
	if o.runs < 1 || o.events < 10_000 || o.backlog < 10_000 {
		fmt.Fprintln(os.Stderr, "bench: want -runs >= 1, -events >= 10000 and -backlog >= 10000 (fewer cannot be timed by polling)")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b, err := newBench(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	defer b.cleanup()

	res, err := b.measure(ctx)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted; stopping child processes and removing the temporary folder")
			return 130
		}
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	b.report(os.Stdout, res)
	return 0
}

// bench owns the temporary folder, the PKI and every child process.
type bench struct {
	o      options
	root   string
	agent  string // binary paths
	hub    string
	pki    *pki.Paths
	agentC struct{ ca, cert, key string }

	mu    sync.Mutex
	procs map[*proc]struct{}
	http  *http.Client
	// ctx ends on Ctrl-C; children are then killed, not asked to stop.
	ctx context.Context
}

func newBench(o options) (*bench, error) {
	b := &bench{o: o, procs: map[*proc]struct{}{}, http: &http.Client{Timeout: 2 * time.Second}}
	var err error
	for _, p := range []struct {
		dst  *string
		name string
	}{{&b.agent, "plantsync-agent"}, {&b.hub, "plantsync-hub"}} {
		if *p.dst, err = filepath.Abs(filepath.Join(o.bin, p.name)); err != nil {
			return nil, err
		}
		if _, err := os.Stat(*p.dst); err != nil {
			return nil, fmt.Errorf("%w; run `make build` first or point -bin at the binaries", err)
		}
	}
	b.root, err = os.MkdirTemp(o.dir, "plantsync-bench-")
	if err != nil {
		return nil, fmt.Errorf("temporary folder: %w", err)
	}
	if isTmpfs(b.root) {
		fmt.Fprintf(os.Stderr, "bench: warning: %s is on tmpfs, where fsync costs nothing; use -dir on a real disk\n", b.root)
	}
	if err := b.makePKI(); err != nil {
		b.cleanup()
		return nil, err
	}
	return b, nil
}

// makePKI uses the hub's own CLI, as an operator would.
func (b *bench) makePKI() error {
	dir := filepath.Join(b.root, "pki")
	agentDir := filepath.Join(b.root, "agent-tls")
	if err := os.MkdirAll(agentDir, 0o700); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"pki", "init", "-dir", dir, "-name", "bench"},
		{"pki", "issue-agent", "-dir", dir, "-id", agentID, "-plant", plantID, "-out", agentDir},
	} {
		out, err := exec.Command(b.hub, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("plantsync-hub %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	b.pki = pki.PathsIn(dir)
	b.agentC.ca = filepath.Join(agentDir, "ca.crt")
	b.agentC.cert = filepath.Join(agentDir, agentID+".crt")
	b.agentC.key = filepath.Join(agentDir, agentID+".key")
	return nil
}

// cleanup kills what still runs and removes the temporary folder.
func (b *bench) cleanup() {
	b.mu.Lock()
	live := make([]*proc, 0, len(b.procs))
	for p := range b.procs {
		live = append(live, p)
	}
	b.mu.Unlock()
	for _, p := range live {
		p.kill()
	}
	if b.o.keep {
		fmt.Fprintf(os.Stderr, "bench: kept %s\n", b.root)
		return
	}
	if err := os.RemoveAll(b.root); err != nil {
		fmt.Fprintf(os.Stderr, "bench: remove %s: %v\n", b.root, err)
	}
}

// results holds every run's value per measurement.
type results struct {
	ingest, e2e, drain, rss []float64
	// Context the targets do not cover, printed below the table.
	fill, rssPeak, connect []float64
	// CPU time per event (µs) of the agent and hub processes: unlike the
	// rates it hardly depends on what else the machine is running.
	cpuIngest, cpuE2EAgent, cpuE2EHub, cpuDrainAgent, cpuDrainHub []float64
	loadBefore, loadAfter                                         string
}

func (b *bench) measure(ctx context.Context) (*results, error) {
	b.ctx = ctx
	r := &results{loadBefore: loadavg()}
	for i := 1; i <= b.o.runs; i++ {
		a, err := b.runIngest(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("run %d, a. ingest: %w", i, err)
		}
		r.ingest = append(r.ingest, a.rate)
		r.cpuIngest = append(r.cpuIngest, a.agentCPU)
		progress("run %d/%d  a. ingest        %s events/s (agent CPU %.1f µs/event)", i, b.o.runs, benchkit.Thousands(a.rate, ','), a.agentCPU)

		e, err := b.runEndToEnd(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("run %d, b. end to end: %w", i, err)
		}
		r.e2e = append(r.e2e, e.rate)
		r.cpuE2EAgent = append(r.cpuE2EAgent, e.agentCPU)
		r.cpuE2EHub = append(r.cpuE2EHub, e.hubCPU)
		progress("run %d/%d  b. end to end    %s events/s (CPU µs/event: agent %.1f, hub %.1f)", i, b.o.runs, benchkit.Thousands(e.rate, ','), e.agentCPU, e.hubCPU)

		d, err := b.runDrain(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("run %d, c/d. backlog: %w", i, err)
		}
		r.drain = append(r.drain, d.drain.Seconds())
		r.rss = append(r.rss, d.rss)
		r.fill = append(r.fill, d.fill)
		r.rssPeak = append(r.rssPeak, d.rssPeak)
		r.connect = append(r.connect, d.connect.Seconds())
		r.cpuDrainAgent = append(r.cpuDrainAgent, d.agentCPU)
		r.cpuDrainHub = append(r.cpuDrainHub, d.hubCPU)
		progress("run %d/%d  c. drain         %.2f s (filled at %s events/s, uplink up after %.2f s; CPU µs/event: agent %.1f, hub %.1f)",
			i, b.o.runs, d.drain.Seconds(), benchkit.Thousands(d.fill, ','), d.connect.Seconds(), d.agentCPU, d.hubCPU)
		progress("run %d/%d  d. RssAnon       %.1f MB buffered, %.1f MB peak", i, b.o.runs, d.rss, d.rssPeak)
	}
	r.loadAfter = loadavg()
	return r, nil
}

// phase is one timed rate with the CPU the processes spent per event.
type phase struct {
	rate             float64
	agentCPU, hubCPU float64 // µs per event
}

// runIngest times commits to the agent's buffer with no hub listening.
func (b *bench) runIngest(ctx context.Context, run int) (phase, error) {
	var ph phase
	dir, err := b.runDir(run, "a-ingest")
	if err != nil {
		return ph, err
	}
	hubAddr, admin := benchkit.FreeAddr(), benchkit.FreeAddr() // nothing listens at hubAddr
	ag, err := b.startAgent(dir, hubAddr, admin, b.o.events)
	if err != nil {
		return ph, err
	}
	defer ag.stop()
	n := uint64(b.o.events)
	var t0, t1 time.Time
	var s0 uint64
	err = b.poll(ctx, "agent to commit "+strconv.FormatUint(n, 10)+" events", []*proc{ag}, func(now time.Time) bool {
		st, ok := b.agentStatus(admin)
		switch {
		case !ok:
		case t0.IsZero():
			if st.Buffer.LastSequence > 0 {
				t0, s0 = now, st.Buffer.LastSequence
			}
		case st.Buffer.LastSequence >= n:
			t1 = now
			return true
		}
		return false
	})
	if err != nil {
		return ph, err
	}
	if s0 >= n {
		return ph, fmt.Errorf("all %d events were committed before the first poll; raise -events", n)
	}
	ph.rate = float64(n-s0) / t1.Sub(t0).Seconds()
	ph.agentCPU = perEvent(ag.cpuTime(), n)
	return ph, nil
}

// runEndToEnd times the agent's acked sequence with the hub up from the start.
func (b *bench) runEndToEnd(ctx context.Context, run int) (phase, error) {
	var ph phase
	dir, err := b.runDir(run, "b-end-to-end")
	if err != nil {
		return ph, err
	}
	hubAddr, hubHTTP, admin := benchkit.FreeAddr(), benchkit.FreeAddr(), benchkit.FreeAddr()
	hb, err := b.startHub(dir, hubAddr, hubHTTP)
	if err != nil {
		return ph, err
	}
	defer hb.stop()
	// The hub serves HTTP just before it opens ingest. (A bare TCP probe of
	// the gRPC port would be logged by the hub as a failed TLS handshake.)
	if err := b.poll(ctx, "hub to listen on "+hubHTTP, []*proc{hb}, func(time.Time) bool { return b.answers("http://" + hubHTTP + "/healthz") }); err != nil {
		return ph, err
	}
	ag, err := b.startAgent(dir, hubAddr, admin, b.o.events)
	if err != nil {
		return ph, err
	}
	defer ag.stop()
	n := uint64(b.o.events)
	var t0, t1 time.Time
	var a0 uint64
	err = b.poll(ctx, "hub to ack "+strconv.FormatUint(n, 10)+" events", []*proc{ag, hb}, func(now time.Time) bool {
		st, ok := b.agentStatus(admin)
		switch {
		case !ok:
		case t0.IsZero():
			if st.Buffer.LastSequence > 0 {
				t0, a0 = now, st.Uplink.AckedThrough
			}
		case st.Uplink.AckedThrough >= n:
			t1 = now
			return true
		}
		return false
	})
	if err != nil {
		return ph, err
	}
	if a0 >= n {
		return ph, fmt.Errorf("all %d events were acked before the first poll; raise -events", n)
	}
	ph.rate = float64(n-a0) / t1.Sub(t0).Seconds()
	ph.agentCPU, ph.hubCPU = perEvent(ag.cpuTime(), n), perEvent(hb.cpuTime(), n)
	return ph, b.checkHub(hubHTTP, n)
}

type drainResult struct {
	drain, connect   time.Duration
	fill             float64 // events/s while filling, hub down
	rss, rssPeak     float64 // MB (10^6 bytes)
	agentCPU, hubCPU float64 // µs per event, drain only
}

// runDrain fills a backlog with the hub down, reads the agent's RssAnon,
// then starts the hub and times until the backlog is acked.
func (b *bench) runDrain(ctx context.Context, run int) (drainResult, error) {
	var r drainResult
	dir, err := b.runDir(run, "c-drain")
	if err != nil {
		return r, err
	}
	// The hub's port is chosen now and left free until the hub starts.
	hubAddr, hubHTTP, admin := benchkit.FreeAddr(), benchkit.FreeAddr(), benchkit.FreeAddr()
	ag, err := b.startAgent(dir, hubAddr, admin, b.o.backlog)
	if err != nil {
		return r, err
	}
	defer ag.stop()
	n := uint64(b.o.backlog)
	sampleRSS := func() {
		if v, err := rssAnonMB(ag.pid()); err == nil {
			r.rssPeak = max(r.rssPeak, v)
		}
	}
	var t0, t1 time.Time
	var s0 uint64
	err = b.poll(ctx, "agent to buffer "+strconv.FormatUint(n, 10)+" events", []*proc{ag}, func(now time.Time) bool {
		sampleRSS()
		st, ok := b.agentStatus(admin)
		switch {
		case !ok:
		case t0.IsZero():
			if st.Buffer.LastSequence > 0 {
				t0, s0 = now, st.Buffer.LastSequence
			}
		case st.Buffer.LastSequence >= n:
			t1 = now
			return true
		}
		return false
	})
	if err != nil {
		return r, err
	}
	r.fill = float64(n-s0) / t1.Sub(t0).Seconds()
	if r.rss, err = rssAnonMB(ag.pid()); err != nil {
		return r, err
	}
	r.rssPeak = max(r.rssPeak, r.rss)
	agentCPU0 := ag.cpuTime()

	start := time.Now()
	hb, err := b.startHub(dir, hubAddr, hubHTTP)
	if err != nil {
		return r, err
	}
	// The agent stops first: the hub's graceful stop waits for open streams.
	defer hb.stop()
	defer ag.stop()
	err = b.poll(ctx, "hub to ack the backlog of "+strconv.FormatUint(n, 10)+" events", []*proc{ag, hb}, func(now time.Time) bool {
		sampleRSS()
		st, ok := b.agentStatus(admin)
		if ok && r.connect == 0 && st.Uplink.Connected {
			r.connect = now.Sub(start)
		}
		if ok && st.Uplink.AckedThrough >= n {
			r.drain = now.Sub(start)
			return true
		}
		return false
	})
	if err != nil {
		return r, err
	}
	r.agentCPU, r.hubCPU = perEvent(ag.cpuTime()-agentCPU0, n), perEvent(hb.cpuTime(), n)
	return r, b.checkHub(hubHTTP, n)
}

func perEvent(cpu time.Duration, n uint64) float64 {
	return float64(cpu.Microseconds()) / float64(n)
}

func (b *bench) runDir(run int, name string) (string, error) {
	dir := filepath.Join(b.root, fmt.Sprintf("run%d-%s", run, name))
	return dir, os.MkdirAll(dir, 0o700)
}

func (b *bench) startAgent(dir, hubAddr, admin string, count int64) (*proc, error) {
	cfg := filepath.Join(dir, "agent.yaml")
	// Short reconnect backoff: the drain is timed from the hub's start, and
	// the default 30 s ceiling would measure the backoff, not the drain.
	yaml := fmt.Sprintf(`agent:
  id: %s
  plant: %s
  state_dir: %q
uplink:
  hub: %q
  tls:
    ca: %q
    cert: %q
    key: %q
  backoff_initial: 50ms
  backoff_max: 250ms
sources:
  - name: gen
    type: generator
    payload_bytes: %d
    count: %d
    rate: 0
metrics:
  listen: %q
log:
  level: info
`, agentID, plantID, filepath.Join(dir, "agent-state"), hubAddr, b.agentC.ca, b.agentC.cert, b.agentC.key,
		payloadBytes, count, admin)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	return b.start("agent", filepath.Join(dir, "agent.log"), b.agent, "run", "-config", cfg)
}

func (b *bench) startHub(dir, grpcAddr, httpAddr string) (*proc, error) {
	cfg := filepath.Join(dir, "hub.yaml")
	yaml := fmt.Sprintf(`grpc:
  listen: %q
  tls:
    cert: %q
    key: %q
    client_ca: %q
http:
  listen: %q
storage:
  dir: %q
pki:
  dir: %q
log:
  level: info
`, grpcAddr, b.pki.HubCert, b.pki.HubKey, b.pki.CACert, httpAddr, filepath.Join(dir, "hub-storage"), b.pki.Dir)
	if b.o.noWorkflows {
		yaml += "pipeline:\n  workflows: []\n"
	}
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return nil, err
	}
	return b.start("hub", filepath.Join(dir, "hub.log"), b.hub, "run", "-config", cfg)
}

// checkHub makes sure the acked events were journaled, not rejected: a
// rejected event is acked too, and would make the numbers meaningless.
func (b *bench) checkHub(httpAddr string, want uint64) error {
	m, err := b.metrics("http://" + httpAddr + "/metrics")
	if err != nil {
		return fmt.Errorf("hub metrics: %w", err)
	}
	pos, rejected := m["plantsync_hub_journal_last_position"], m["plantsync_hub_journal_rejected_total"]
	if uint64(pos) < want || rejected > 0 {
		return fmt.Errorf("hub journal holds %.0f events and rejected %.0f, want %d journaled and none rejected; see the hub log under %s (run with -keep)",
			pos, rejected, want, b.root)
	}
	return nil
}

// agentStatus is the part of the agent's /api/v1/status the bench reads.
type agentStatus struct {
	Buffer struct {
		Events       uint64 `json:"events"`
		LastSequence uint64 `json:"last_sequence"`
	} `json:"buffer"`
	Uplink struct {
		Connected    bool   `json:"connected"`
		AckedThrough uint64 `json:"acked_through"`
	} `json:"uplink"`
}

// get is a GET that Ctrl-C cuts short.
func (b *bench) get(url string) (*http.Response, error) {
	ctx := b.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return b.http.Do(req)
}

// agentStatus reports ok false while the agent is not answering yet.
func (b *bench) agentStatus(admin string) (agentStatus, bool) {
	var st agentStatus
	resp, err := b.get("http://" + admin + "/api/v1/status")
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, false
	}
	return st, json.NewDecoder(resp.Body).Decode(&st) == nil
}

// metrics reads unlabelled samples of a Prometheus text page.
func (b *bench) metrics(url string) (map[string]float64, error) {
	resp, err := b.get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// poll calls cond every pollEvery until it holds, failing when ctx ends, the
// phase times out or one of the watched processes exits.
func (b *bench) poll(ctx context.Context, what string, watch []*proc, cond func(now time.Time) bool) error {
	deadline := time.NewTimer(b.o.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if cond(time.Now()) {
			return nil
		}
		for _, p := range watch {
			select {
			case <-p.done:
				return fmt.Errorf("waiting for %s: %s exited (%v); last lines of %s:\n%s", what, p.name, p.err, p.logPath, tail(p.logPath, 15))
			default:
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			var logs []string
			for _, p := range watch {
				logs = append(logs, fmt.Sprintf("last lines of %s:\n%s", p.logPath, tail(p.logPath, 15)))
			}
			return fmt.Errorf("timed out after %s waiting for %s\n%s", b.o.timeout, what, strings.Join(logs, "\n"))
		case <-tick.C:
		}
	}
}

// proc is one child process.
type proc struct {
	b       *bench
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

func (b *bench) start(name, logPath, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group: a Ctrl-C at the terminal reaches only the bench,
	// which then stops the children itself. Pdeathsig: they die with the
	// bench even if it is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig fires when the spawning thread exits; keep it alive.
	runtime.LockOSThread()
	err = cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{b: b, name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	b.mu.Lock()
	b.procs[p] = struct{}{}
	b.mu.Unlock()
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		b.mu.Lock()
		delete(b.procs, p)
		b.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// cpuTime is the CPU time the process has used so far.
func (p *proc) cpuTime() time.Duration { return benchkit.ProcCPU(p.pid()) }

// stop asks for a clean shutdown (SIGTERM) and kills after stopGrace.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	if p.b.ctx != nil && p.b.ctx.Err() != nil {
		p.kill()
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	var interrupted <-chan struct{}
	if p.b.ctx != nil {
		interrupted = p.b.ctx.Done()
	}
	select {
	case <-p.done:
	case <-interrupted:
		p.kill()
	case <-t.C:
		fmt.Fprintf(os.Stderr, "bench: %s still running %s after SIGTERM; killed it (its state is discarded)\n", p.name, stopGrace)
		p.kill()
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// rssAnonMB reads RssAnon from /proc/PID/status, in MB (10^6 bytes).
func rssAnonMB(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				break
			}
			kib, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, err
			}
			return kib * 1024 / 1e6, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no RssAnon line", pid)
}

// answers reports whether an HTTP server answers at url, whatever it says.
func (b *bench) answers(url string) bool {
	resp, err := b.get(url)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return true
}

func tail(path string, n int) string {
	return "  " + strings.ReplaceAll(benchkit.Tail(path, n), "\n", "\n  ")
}

func isTmpfs(path string) bool {
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	return syscall.Statfs(path, &st) == nil && st.Type == tmpfsMagic
}

// loadavg is the 1, 5 and 15 minute load average, for judging how much
// else the machine was doing.
func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// report prints the table of medians against the targets.
func (b *bench) report(w io.Writer, r *results) {
	type row struct {
		name      string
		vals      []float64
		target    float64
		atLeast   bool // higher is better
		format    func(float64) string
		targetTxt string
	}
	rate := func(v float64) string { return benchkit.Thousands(v, ',') + " ev/s" }
	secs := func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + " s" }
	mb := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + " MB" }
	rows := []row{
		{"a. durable agent ingest (no hub)", r.ingest, 100_000, true, rate, ">= 100,000 ev/s"},
		{"b. end to end, hub durable ack", r.e2e, 50_000, true, rate, ">= 50,000 ev/s"},
		{fmt.Sprintf("c. drain %s backlog", count(b.o.backlog)), r.drain, 20, false, secs, "<= 20 s"},
		{fmt.Sprintf("d. agent RssAnon, %s buffered", count(b.o.backlog)), r.rss, 80, false, mb, "<= 80 MB"},
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "\nplantsync bench: %d run(s); a, b: %s events; c, d: %s events; %d-byte events; mTLS over loopback; fsync on agent and hub\n",
		b.o.runs, count(b.o.events), count(b.o.backlog), payloadBytes)
	workflows := "shipped pipeline workflows"
	if b.o.noWorkflows {
		workflows = "no pipeline workflows (-no-workflows)"
	}
	fmt.Fprintf(&buf, "hub with %s; %s/%s, %d CPUs, state under %s, load average %s before, %s after\n\n",
		workflows, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), filepath.Dir(b.root), r.loadBefore, r.loadAfter)
	fmt.Fprintf(&buf, "%-36s %16s %16s  %-6s %s\n", "measurement", "median", "target", "result", "runs")
	for _, rw := range rows {
		med := benchkit.Median(rw.vals)
		pass := med <= rw.target
		if rw.atLeast {
			pass = med >= rw.target
		}
		verdict := "MISS"
		if pass {
			verdict = "PASS"
		}
		runs := make([]string, len(rw.vals))
		for i, v := range rw.vals {
			runs[i] = rw.format(v)
		}
		fmt.Fprintf(&buf, "%-36s %16s %16s  %-6s %s\n", rw.name, rw.format(med), rw.targetTxt, verdict, strings.Join(runs, ", "))
	}
	fmt.Fprintf(&buf, "\nnot targets: backlog fill rate (hub down) median %s ev/s; agent RssAnon peak during fill and drain median %.1f MB; uplink connected %.2f s after the hub started (median)\n",
		benchkit.Thousands(benchkit.Median(r.fill), ','), benchkit.Median(r.rssPeak), benchkit.Median(r.connect))
	fmt.Fprintf(&buf, "CPU per event (median, user+system of the process until the agent had its last ack, the hub's start included, its pipeline possibly still busy; little affected by other load): a. agent %.1f µs; b. agent %.1f µs, hub %.1f µs; c. agent %.1f µs, hub %.1f µs\n",
		benchkit.Median(r.cpuIngest), benchkit.Median(r.cpuE2EAgent), benchkit.Median(r.cpuE2EHub), benchkit.Median(r.cpuDrainAgent), benchkit.Median(r.cpuDrainHub))
	fmt.Fprintf(&buf, "MB = 10^6 bytes; rates count from the first observed commit (a, b), drain from the hub's start (c), RssAnon right after the backlog is committed (d); status polled every %s.\n", pollEvery)
	if l := strings.Fields(r.loadBefore); len(l) > 0 {
		if v, err := strconv.ParseFloat(l[0], 64); err == nil && v > 1 {
			fmt.Fprintln(&buf, "warning: the machine was busy when the bench started (1-minute load above 1): other processes compete for the CPUs and disk, so the rates are lower than on an idle machine; the CPU per event is not")
		}
	}
	_, _ = w.Write(buf.Bytes())
}

func count(n int64) string {
	switch {
	case n%1_000_000 == 0:
		return strconv.FormatInt(n/1_000_000, 10) + "M"
	case n%1_000 == 0:
		return strconv.FormatInt(n/1_000, 10) + "k"
	}
	return strconv.FormatInt(n, 10)
}
