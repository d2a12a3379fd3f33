package main

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
)

// BenchmarkWebhookDeliver measures deliveries per second from the host
// through a real plugin process (this test binary serving the webhook
// connector: go-plugin, gRPC, AutoMTLS) to a local HTTP target that checks
// each signature, with 8 ordering keys delivered in parallel and in order
// within each key, as the delivery engine does.
//
//	go test -run '^$' -bench BenchmarkWebhookDeliver -benchtime 20000x ./plugins/webhook
func BenchmarkWebhookDeliver(b *testing.B) {
	const keys = 8
	const secret = "bench-signing-secret"
	var received, badSig atomic.Int64
	tg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !hmac.Equal([]byte(r.Header.Get("X-Plantsync-Signature")), []byte(Sign(secret, body))) || r.Header.Get("Idempotency-Key") == "" {
			badSig.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		received.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"ok"}`))
	}))
	defer tg.Close()
	path, sum := sdktest.SelfPlugin(b, "webhook")
	b.Setenv("SECRET_FOR_BENCH", secret)
	ctx := context.Background()
	d, err := sdk.OpenDestination(ctx, sdk.HostConfig{Name: "portal", Path: path, SHA256: sum, Config: map[string]any{
		"url": tg.URL, "actions": []any{"purchase_order.publish"}, "hmac_secret": "env:SECRET_FOR_BENCH", "max_connections": keys,
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = d.Close() }()
	doc, _ := json.Marshal(map[string]any{"purchase_order": "PUR-9", "supplier": "PARTY-9",
		"lines": []map[string]string{{"line": "1", "item": "200201", "quantity": "99.500", "unit": "kg"}}})

	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for k := range keys {
		n := b.N / keys
		if k < b.N%keys {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				res, err := d.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: fmt.Sprintf("%d-%d", k, i), Action: "purchase_order.publish",
					OrderingKey: fmt.Sprintf("po:%d", k), Attempt: 1, Document: doc})
				if err != nil || res.Outcome != sdk.OutcomeOK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed.Load() > 0 || badSig.Load() > 0 || received.Load() != int64(b.N) {
		b.Fatalf("failed %d, bad signatures %d, received %d of %d", failed.Load(), badSig.Load(), received.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "deliveries/s")
}
