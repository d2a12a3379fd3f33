//go:build linux

package opcua_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/plantsync/plantsync/agent"
	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/agent/source/opcua"
	"github.com/plantsync/plantsync/agent/source/opcua/internal/uatest"
	"github.com/plantsync/plantsync/internal/testkit"
)

// BenchmarkOPCUA20kItems1Hz measures one agent (OPC UA source, bbolt
// buffer, mTLS uplink) subscribed to 20 000 items that each change once a
// second on the gopcua test server, with a hub acknowledging: whether every
// change reaches the buffer, and the CPU of the agent process alone. The
// server and the hub run as child processes (this test binary started
// again in a peer role), so getrusage of this process is the agent's.
//
//	go test -run '^$' -bench BenchmarkOPCUA20kItems1Hz -benchtime 1x ./agent/source/opcua/
//
// Reported: cpu_%_of_core (target < 25), changes/s, missing (changes the
// server made that did not reach the buffer; target 0), superseded.
func BenchmarkOPCUA20kItems1Hz(b *testing.B) {
	benchItems(b, 20000, 20*time.Second, opcua.SecurityConfig{Policy: opcua.PolicyNone, Mode: opcua.ModeNone})
}

// BenchmarkOPCUA20kItems1HzSignAndEncrypt is the same over a
// Basic256Sha256 SignAndEncrypt channel.
func BenchmarkOPCUA20kItems1HzSignAndEncrypt(b *testing.B) {
	benchItems(b, 20000, 20*time.Second, opcua.SecurityConfig{Policy: opcua.PolicyBasic256Sha256, Mode: opcua.ModeSignAndEncrypt})
}

func benchItems(b *testing.B, items int, window time.Duration, sec opcua.SecurityConfig) {
	p := testkit.NewPKI(b)
	srv := startPeer(b, "uaserver", "PLANTSYNC_OPCUA_BENCH_ITEMS="+strconv.Itoa(items))
	fingerprint := srv.expect(b, "fingerprint=", 2*time.Minute)
	endpoint := srv.expect(b, "endpoint=", 2*time.Minute)
	hc, _ := json.Marshal(opcua.BenchHub{Cert: p.Paths.HubCert, Key: p.Paths.HubKey, ClientCA: p.Paths.CACert, PKIDir: p.Dir,
		StorageDir: filepath.Join(b.TempDir(), "hub")})
	hubPeer := startPeer(b, "hub", "PLANTSYNC_OPCUA_BENCH_HUB="+string(hc))
	hubAddr := hubPeer.expect(b, "grpc=", time.Minute)

	acfg := testkit.AgentConfig(b, p, "bench-agent", "DE-01", filepath.Join(b.TempDir(), "agent"), hubAddr, "")
	oc := opcua.NewDefaultConfig()
	oc.Common = source.Common{Name: "bench", Type: "opcua"}
	oc.Endpoint = endpoint
	oc.Security = sec
	oc.Trust.Fingerprints = []string{fingerprint}
	// Changes 1 s apart never share a 500 ms publishing interval, so the
	// server (which keeps one value per item and interval) drops none.
	oc.Subscription.PublishingInterval = 500 * time.Millisecond
	oc.Subscription.SamplingInterval = time.Second
	oc.Subscription.MaxItemsPerSubscription = 5000
	for i := 0; i < items; i++ {
		oc.Nodes = append(oc.Nodes, opcua.NodeConfig{NodeID: uatest.NodeID(opcua.BenchItemKey(i)), ItemOptions: opcua.ItemOptions{Backfill: opcua.BackfillOff}})
	}
	acfg.Sources = []agent.SourceEntry{{Common: oc.Common, Config: oc}}
	a, err := agent.New(acfg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	}()
	metrics := "http://" + a.AdminAddr() + "/metrics"
	waitFor(b, 2*time.Minute, "all items good and their initial values committed", func() bool {
		return metric(b, metrics, "plantsync_agent_opcua_monitored_items", `state="good"`) == float64(items) &&
			metric(b, metrics, "plantsync_agent_opcua_events_total", "") >= float64(items)
	})
	initial := metric(b, metrics, "plantsync_agent_opcua_events_total", "")

	srv.send(b, "start")
	srv.expect(b, "started", 10*time.Second)
	time.Sleep(3 * time.Second) // warm up
	cpu0, ev0, t0 := cpuTime(), metric(b, metrics, "plantsync_agent_opcua_events_total", ""), time.Now()
	b.ResetTimer()
	time.Sleep(window)
	cpu1, ev1, t1 := cpuTime(), metric(b, metrics, "plantsync_agent_opcua_events_total", ""), time.Now()
	b.StopTimer()
	srv.send(b, "stop")
	changes, _ := strconv.ParseFloat(srv.expect(b, "changes=", 30*time.Second), 64)
	waitFor(b, time.Minute, "the last changes committed", func() bool {
		return metric(b, metrics, "plantsync_agent_opcua_events_total", "")-initial >= changes
	})
	time.Sleep(2 * time.Second) // anything beyond the changes would be a duplicate
	got := metric(b, metrics, "plantsync_agent_opcua_events_total", "") - initial
	waitFor(b, time.Minute, "the hub acknowledged everything", func() bool {
		st := a.Status()
		return st.Uplink.AckedThrough >= st.Buffer.LastSequence
	})
	elapsed := t1.Sub(t0).Seconds()
	cpuPct := (cpu1 - cpu0).Seconds() / elapsed * 100
	b.ReportMetric(cpuPct, "cpu_%_of_core")
	b.ReportMetric((ev1-ev0)/elapsed, "changes/s")
	b.ReportMetric(changes-got, "missing")
	b.ReportMetric(metric(b, metrics, "plantsync_agent_opcua_superseded_total", ""), "superseded")
	b.Logf("%d items at 1 Hz: %.0f changes made, %.0f committed (missing %.0f), %.0f changes/s in the %s window, agent CPU %.1f%% of one core, buffer %+v",
		items, changes, got, changes-got, (ev1-ev0)/elapsed, window, cpuPct, a.Status().Buffer)
}

// cpuTime is this process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// metric reads one sample from the agent's /metrics.
func metric(b *testing.B, url, name, label string) float64 {
	b.Helper()
	res, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") || !strings.Contains(line, label) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			b.Fatalf("metric line %q: %v", line, err)
		}
		return v
	}
	return 0
}

func waitFor(b *testing.B, within time.Duration, what string, cond func() bool) {
	b.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// peer is this test binary run again in a peer role (see
// opcua.BenchRoleEnv).
type peer struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startPeer(b *testing.B, role string, env ...string) *peer {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), opcua.BenchRoleEnv+"="+role), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	pr := &peer{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		defer close(pr.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			pr.lines <- sc.Text()
		}
	}()
	b.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return pr
}

func (p *peer) send(b *testing.B, line string) {
	b.Helper()
	if _, err := fmt.Fprintln(p.stdin, line); err != nil {
		b.Fatal(err)
	}
}

// expect waits for a line starting with prefix and returns the rest.
func (p *peer) expect(b *testing.B, prefix string, within time.Duration) string {
	b.Helper()
	deadline := time.After(within)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				b.Fatalf("peer exited before %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return strings.TrimPrefix(l, prefix)
			}
		case <-deadline:
			b.Fatalf("peer did not say %q within %s", prefix, within)
		}
	}
}

// BenchmarkOPCUA2kItems1Hz is the same at a tenth of the load, for a quick
// check of the setup.
func BenchmarkOPCUA2kItems1Hz(b *testing.B) {
	benchItems(b, 2000, 10*time.Second, opcua.SecurityConfig{Policy: opcua.PolicyNone, Mode: opcua.ModeNone})
}
