package main

import (
	"context"
	"net/http"
	"testing"

	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/sim/sandboxerp"
)

// The webhook connector against the sandbox ERP of `make run`: a delivery
// repeated with the same key keeps one document, Lookup finds it, and the
// sandbox's injected failures come back as retryable.
func TestAgainstSandboxERP(t *testing.T) {
	const secret = "demo-signing-secret"
	s, err := sandboxerp.New(sandboxerp.Config{Listen: "127.0.0.1:0", Dir: t.TempDir(), HMACSecret: secret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	d, _ := connect(t, map[string]any{"url": s.URL() + "/webhook", "lookup_url": s.URL() + "/documents/by-key/{key}",
		"actions": []any{"purchase_requisition.create"}, "hmac_secret": secret})
	req := sdk.DeliverRequest{IdempotencyKey: "c17a613d727280b5435d0f65828db7b2", Action: "purchase_requisition.create", Document: doc}

	if lk, err := d.Lookup(context.Background(), sdk.LookupRequest{IdempotencyKey: req.IdempotencyKey}); err != nil || lk.Status != sdk.LookupNotFound {
		t.Fatalf("lookup before: %+v, %v", lk, err)
	}
	s.FailNext(2, http.StatusServiceUnavailable)
	for i := range 2 {
		if res := deliver(t, d, req); res.Outcome != sdk.OutcomeRetryable {
			t.Fatalf("attempt %d while failing: %+v", i+1, res)
		}
	}
	first := deliver(t, d, req)
	again := deliver(t, d, req)
	if first.Outcome != sdk.OutcomeOK || again.Outcome != sdk.OutcomeOK || first.ExternalRef != "SBX-000001" || again.ExternalRef != first.ExternalRef {
		t.Fatalf("deliveries: %+v, %+v", first, again)
	}
	lk, err := d.Lookup(context.Background(), sdk.LookupRequest{IdempotencyKey: req.IdempotencyKey})
	if err != nil || lk.Status != sdk.LookupFound || lk.ExternalRef != "SBX-000001" {
		t.Fatalf("lookup after: %+v, %v", lk, err)
	}
	docs, err := s.Documents("", sdk.ListRequest{}.Since)
	if err != nil || len(docs) != 1 || docs[0].Deliveries != 2 {
		t.Fatalf("sandbox holds %+v, %v; want one document delivered twice", docs, err)
	}
}
