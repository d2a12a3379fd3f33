package delivery

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/plugins/sdk"
)

// BenchmarkWebhookThroughEngine measures webhook deliveries per second
// through the whole engine: a real outbox (bbolt, fsync) holding b.N
// entries over 8 ordering keys, the delivery ledger, the plugins/webhook
// binary as a real plugin process (go-plugin, gRPC, AutoMTLS) and a local
// HTTP target. It counts until every entry's outcome is recorded.
//
//	go test -run '^$' -bench BenchmarkWebhookThroughEngine -benchtime 20000x ./hub/delivery
func BenchmarkWebhookThroughEngine(b *testing.B) {
	const keys = 8
	bin := buildWebhookPlugin(b)
	sum, err := sdk.FileSHA256(bin)
	if err != nil {
		b.Fatal(err)
	}
	var received atomic.Int64
	tg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("Idempotency-Key") == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		received.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"ok"}`))
	}))
	defer tg.Close()

	r := newRig(b)
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("PO-%d", i)
	}
	perKey := (b.N + keys - 1) / keys
	r.store.add(names, perKey)
	total := perKey * keys
	host, err := sdk.OpenDestination(context.Background(), sdk.HostConfig{Name: dest, Path: bin, SHA256: sum, Logger: testLogger(b),
		Config: map[string]any{"url": tg.URL, "actions": []any{"thing.create"}, "max_connections": keys}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = host.Close() }()
	cfg := NewDefaultConfig()
	cfg.Concurrency = keys

	counted := &countingStore{Store: r.store.ob}
	b.ResetTimer()
	start := time.Now()
	e, err := New(Options{Destination: dest, Config: cfg, Outbox: counted, Connector: host, Ledger: r.ledger, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	for r.store.ob.Depth(dest) > 0 {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	stopEngine(b, e)
	if got := len(r.store.entries(outbox.StateDelivered)); got != total || received.Load() != int64(total) {
		b.Fatalf("%d delivered, target received %d; want %d", got, received.Load(), total)
	}
	b.ReportMetric(float64(total)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(total)/float64(counted.completes.Load()), "entries/commit")
	b.ReportMetric(float64(total)/float64(counted.reads.Load()), "entries/read")
}

// countingStore counts the engine's outbox transactions.
type countingStore struct {
	outbox.Store
	completes, reads atomic.Int64
}

func (c *countingStore) Complete(dest string, outs []outbox.Outcome) error {
	c.completes.Add(1)
	return c.Store.Complete(dest, outs)
}

func (c *countingStore) Pending(dest string, after uint64, limit int) ([]outbox.Entry, error) {
	c.reads.Add(1)
	return c.Store.Pending(dest, after, limit)
}

// buildWebhookPlugin builds plugins/webhook into a temp folder.
func buildWebhookPlugin(b *testing.B) string {
	b.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		b.Fatalf("the go tool builds the webhook plugin: %v", err)
	}
	out := filepath.Join(b.TempDir(), "webhook")
	cmd := exec.Command(goTool, "build", "-o", out, "github.com/plantsync/plantsync/plugins/webhook")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build webhook plugin: %v\n%s", err, msg)
	}
	return out
}
