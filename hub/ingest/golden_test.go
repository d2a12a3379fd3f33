package ingest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/ingest"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/internal/pki"
	"github.com/plantsync/plantsync/internal/testkit"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// A newer hub must accept an older agent's stream: replay the recorded v1
// messages byte for byte and expect every event journaled and acked.
func TestHubAcceptsRecordedV1AgentStream(t *testing.T) {
	p := testkit.NewPKI(t)
	cert, key := p.Agent(t, "agent-1", "DE-01")
	j, err := journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(t.TempDir(), "journal.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	cfg := ingest.NewDefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS = ingest.TLSConfig{Cert: p.Paths.HubCert, Key: p.Paths.HubKey, ClientCA: p.Paths.CACert}
	srv := ingest.New(cfg, j, nil, nil)
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())

	tlsCfg, err := pki.ClientTLS(cert, key, p.Paths.CACert, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := pb.NewUplinkClient(conn).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lastSeq uint64
	var events int
	for i := 0; ; i++ {
		raw, err := os.ReadFile(filepath.Join("..", "..", "proto", "plantsync", "v1", "testdata", "v1", "agent_message_"+string(rune('0'+i))+".bin"))
		if os.IsNotExist(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var msg pb.AgentMessage
		if err := proto.Unmarshal(raw, &msg); err != nil {
			t.Fatal(err)
		}
		if b := msg.GetBatch(); b != nil {
			lastSeq, events = b.GetLastSequence(), len(b.GetEvents())
		}
		if err := stream.Send(&msg); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			w, err := stream.Recv()
			if err != nil || w.GetWelcome() == nil {
				t.Fatalf("welcome: %v %v", w, err)
			}
		}
	}
	if events == 0 {
		t.Fatal("no recorded batch found")
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for ack of %d: %v", lastSeq, err)
		}
		if m.GetAck().GetThroughSequence() == lastSeq {
			break
		}
	}
	recs, err := j.Read(0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != events {
		rej, _ := j.Rejected(0, 100)
		t.Fatalf("journaled %d of %d recorded events (rejected: %+v)", len(recs), events, rej)
	}
	for _, r := range recs {
		var ev pb.Event
		if err := proto.Unmarshal(r.Event, &ev); err != nil || ev.GetPayload() == nil {
			t.Fatalf("journaled event %d lost its payload: %v", r.Position, err)
		}
	}
}
