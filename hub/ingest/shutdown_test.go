package ingest_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Agents never end their streams, so Shutdown must end them itself instead
// of waiting out its deadline; the agent sees Unavailable and reconnects.
func TestShutdownEndsOpenStreams(t *testing.T) {
	h := startHub(t)
	s := open(t, h.dial(t, h.agentTLS(t, "press-1", "DE-01")))
	s.hello("press-1", "e1")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != nil {
		t.Fatal("Shutdown waited out its deadline with an agent stream open")
	}
	if err := s.recvErr(); status.Code(err) != codes.Unavailable {
		t.Fatalf("agent stream ended with %v, want Unavailable", err)
	}
}
