package opcua

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plantsync/plantsync/agent/source/opcua/internal/uatest"
	"github.com/plantsync/plantsync/hub"
)

// BenchRoleEnv makes the test binary, started again by the benchmark, run
// one peer instead of the tests: "uaserver" (the gopcua test server with
// PLANTSYNC_OPCUA_BENCH_ITEMS variables) or "hub" (a hub configured from
// PLANTSYNC_OPCUA_BENCH_HUB). Peers run in their own processes so that the
// benchmark process measures the agent's CPU alone.
const BenchRoleEnv = "PLANTSYNC_OPCUA_BENCH_ROLE"

// BenchHub is what the hub role needs, as JSON.
type BenchHub struct {
	Cert, Key, ClientCA, PKIDir, StorageDir string
}

// BenchItemKey is the node key of benchmark item i (ns=2;s=B.<i>).
func BenchItemKey(i int) string { return "B." + strconv.Itoa(i) }

func runBenchRole(role string) int {
	var err error
	switch role {
	case "uaserver":
		err = benchServer(os.Stdin, os.Stdout)
	case "hub":
		err = benchHub(os.Stdin, os.Stdout)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench role:", err)
		return 1
	}
	return 0
}

// benchServer serves N UInt32 variables. On "start" every variable changes
// once a second, spread over ten 100 ms slices; "stop" ends the changes and
// answers "changes=<total>"; end of input stops the server.
func benchServer(in io.Reader, out io.Writer) error {
	n, err := strconv.Atoi(os.Getenv("PLANTSYNC_OPCUA_BENCH_ITEMS"))
	if err != nil || n < 1 {
		return fmt.Errorf("PLANTSYNC_OPCUA_BENCH_ITEMS: %v", err)
	}
	ident, err := uatest.NewIdentity()
	if err != nil {
		return err
	}
	ns := uatest.NewNamespace()
	if err := ns.AddFolder(uatest.Root, "B", "B"); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := ns.AddVariable("B", BenchItemKey(i), strconv.Itoa(i), uint32(0)); err != nil {
			return err
		}
	}
	srv, err := uatest.Start(uatest.Options{Identity: ident, Namespace: ns})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(out, "fingerprint=%s\n", Fingerprint(ident.Cert))
	fmt.Fprintf(out, "endpoint=%s\n", srv.Endpoint())

	var changes atomic.Int64
	var stop chan struct{}
	var wg sync.WaitGroup
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		switch sc.Text() {
		case "start":
			stop = make(chan struct{})
			wg.Add(1)
			go func(stop chan struct{}) {
				defer wg.Done()
				t := time.NewTicker(100 * time.Millisecond)
				defer t.Stop()
				for tick := 0; ; tick++ {
					select {
					case <-stop:
						return
					case <-t.C:
					}
					slice, round := tick%10, uint32(tick/10+1)
					for i := slice; i < n; i += 10 {
						if ns.Set(BenchItemKey(i), round) == nil {
							changes.Add(1)
						}
					}
				}
			}(stop)
			fmt.Fprintln(out, "started")
		case "stop":
			if stop != nil {
				close(stop)
				wg.Wait()
				stop = nil
			}
			fmt.Fprintf(out, "changes=%d\n", changes.Load())
		}
	}
	if stop != nil {
		close(stop)
		wg.Wait()
	}
	return nil
}

func benchHub(in io.Reader, out io.Writer) error {
	var hc BenchHub
	if err := json.Unmarshal([]byte(os.Getenv("PLANTSYNC_OPCUA_BENCH_HUB")), &hc); err != nil {
		return fmt.Errorf("PLANTSYNC_OPCUA_BENCH_HUB: %w", err)
	}
	cfg := hub.NewDefaultConfig()
	cfg.GRPC.Listen = "127.0.0.1:0"
	cfg.GRPC.TLS.Cert, cfg.GRPC.TLS.Key, cfg.GRPC.TLS.ClientCA = hc.Cert, hc.Key, hc.ClientCA
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Storage.Dir = hc.StorageDir
	cfg.PKI.Dir = hc.PKIDir
	h := hub.New(cfg, slog.New(slog.DiscardHandler))
	if err := h.Start(context.Background()); err != nil {
		return err
	}
	fmt.Fprintf(out, "grpc=%s\n", h.GRPCAddr())
	_, _ = io.Copy(io.Discard, in)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return h.Shutdown(ctx)
}
