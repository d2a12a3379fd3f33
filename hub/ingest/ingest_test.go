package ingest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/ingest"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/internal/pki"
	"github.com/plantsync/plantsync/internal/syncbuf"
	"github.com/plantsync/plantsync/internal/testkit"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hubEnv is a real ingest server over a real bbolt journal on 127.0.0.1:0.
type hubEnv struct {
	pki         *testkit.PKI
	journalPath string
	cfg         ingest.Config
	j           *journal.Bolt
	srv         *ingest.Server
	reg         *prometheus.Registry
	logs        *syncbuf.Buffer
}

func startHub(t *testing.T) *hubEnv {
	t.Helper()
	p := testkit.NewPKI(t)
	cfg := ingest.NewDefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.TLS = ingest.TLSConfig{Cert: p.Paths.HubCert, Key: p.Paths.HubKey, ClientCA: p.Paths.CACert}
	cfg.MaxBatchEvents = 100
	h := &hubEnv{pki: p, cfg: cfg, journalPath: filepath.Join(t.TempDir(), "journal.db")}
	h.start(t)
	// A restarted server rebinds the port it got first.
	h.cfg.Listen = h.srv.Addr()
	t.Cleanup(func() { h.stop(t) })
	return h
}

func (h *hubEnv) start(t *testing.T) {
	t.Helper()
	j, err := journal.OpenBolt(journal.BoltOptions{Path: h.journalPath, CommitInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	h.j, h.reg, h.logs = j, prometheus.NewRegistry(), &syncbuf.Buffer{}
	h.srv = ingest.New(h.cfg, j, slog.New(slog.NewTextHandler(h.logs, nil)), h.reg)
	if err := h.srv.Start(context.Background()); err != nil {
		_ = j.Close()
		t.Fatal(err)
	}
}

func (h *hubEnv) stop(t *testing.T) {
	t.Helper()
	if h.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Errorf("ingest shutdown: %v", err)
	}
	if err := h.j.Close(); err != nil {
		t.Errorf("journal close: %v", err)
	}
	h.srv = nil
}

// agentTLS is the TLS config of agent id at plant with a certificate from
// the hub's CA.
func (h *hubEnv) agentTLS(t *testing.T, id, plant string) *tls.Config {
	t.Helper()
	cert, key := h.pki.Agent(t, id, plant)
	c, err := pki.ClientTLS(cert, key, h.pki.Paths.CACert, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dial opens a gRPC client connection; it is closed when the test ends.
func (h *hubEnv) dial(t *testing.T, tlsCfg *tls.Config) pb.UplinkClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+h.srv.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return pb.NewUplinkClient(conn)
}

// session is one open Uplink stream.
type session struct {
	t      *testing.T
	stream pb.Uplink_StreamClient
	cancel context.CancelFunc
}

func open(t *testing.T, c pb.UplinkClient) *session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	st, err := c.Stream(ctx)
	if err != nil {
		cancel()
		t.Fatalf("open stream: %v", err)
	}
	s := &session{t: t, stream: st, cancel: cancel}
	t.Cleanup(s.close)
	return s
}

func (s *session) close() {
	_ = s.stream.CloseSend()
	// Wait for the server to end the stream, so the next session of the
	// same agent does not race this one's teardown.
	for {
		if _, err := s.stream.Recv(); err != nil {
			break
		}
	}
	s.cancel()
}

func (s *session) send(m *pb.AgentMessage) {
	s.t.Helper()
	if err := s.stream.Send(m); err != nil && !errors.Is(err, io.EOF) {
		s.t.Fatalf("send: %v", err)
	}
}

func hello(id, epoch string) *pb.AgentMessage {
	return &pb.AgentMessage{Msg: &pb.AgentMessage_Hello{Hello: &pb.Hello{
		AgentId: id, Epoch: epoch, Plant: "DE-01", AgentVersion: "test", ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1,
	}}}
}

// hello sends Hello and returns the Welcome.
func (s *session) hello(id, epoch string) *pb.Welcome {
	s.t.Helper()
	s.send(hello(id, epoch))
	m, err := s.stream.Recv()
	if err != nil {
		s.t.Fatalf("recv welcome: %v", err)
	}
	w := m.GetWelcome()
	if w == nil {
		s.t.Fatalf("first hub message is %v, want welcome", m)
	}
	return w
}

// awaitAck reads until a cumulative ack covers through.
func (s *session) awaitAck(through uint64) {
	s.t.Helper()
	for {
		m, err := s.stream.Recv()
		if err != nil {
			s.t.Fatalf("waiting for ack %d: %v", through, err)
		}
		if a := m.GetAck(); a != nil && a.GetThroughSequence() >= through {
			if a.GetThroughSequence() != through {
				s.t.Fatalf("ack %d, want %d", a.GetThroughSequence(), through)
			}
			return
		}
	}
}

// recvErr reads until the stream fails and returns the error.
func (s *session) recvErr() error {
	s.t.Helper()
	for {
		m, err := s.stream.Recv()
		if err != nil {
			return err
		}
		if m.GetWelcome() != nil {
			s.t.Fatalf("hub welcomed a stream it should refuse")
		}
	}
}

type ev struct {
	id    string
	seq   uint64
	plant string
}

func encode(t *testing.T, e ev) []byte {
	t.Helper()
	raw, err := proto.Marshal(&pb.Event{
		Id: e.id, Sequence: e.seq, Plant: e.plant, Type: "production.completion", SchemaVersion: 1,
		Source:  &pb.Source{Name: "mes", Uri: "mes/DE-01/L1/completion"},
		Payload: &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{Order: "PO-1", Item: "P-1", Good: &pb.Quantity{Value: "1", Unit: "EA"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func batch(first, last uint64, events ...[]byte) *pb.AgentMessage {
	return &pb.AgentMessage{Msg: &pb.AgentMessage_Batch{Batch: &pb.Batch{FirstSequence: first, LastSequence: last, Events: events}}}
}

// events makes events first..last of plant DE-01 with ids prefix-N.
func events(t *testing.T, prefix string, first, last uint64) [][]byte {
	var out [][]byte
	for s := first; s <= last; s++ {
		out = append(out, encode(t, ev{fmt.Sprintf("%s-%d", prefix, s), s, "DE-01"}))
	}
	return out
}

func journaledIDs(t *testing.T, j journal.Journal) []string {
	t.Helper()
	recs, err := j.Read(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.EventID)
	}
	return ids
}

// deliver proves the server serves a well-behaved agent: hello, one batch,
// ack after commit.
func (h *hubEnv) deliver(t *testing.T, id, epoch string) {
	t.Helper()
	s := open(t, h.dial(t, h.agentTLS(t, id, "DE-01")))
	w := s.hello(id, epoch)
	n := w.GetResumeAfter() + 1
	s.send(batch(n, n, encode(t, ev{fmt.Sprintf("%s-%s-%d", id, epoch, n), n, "DE-01"})))
	s.awaitAck(n)
	s.close()
}

func writePair(t *testing.T, certPEM, keyPEM []byte) (cert, key string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	if err := pki.WriteCertFile(cert, certPEM); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(key, keyPEM); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// Client certificates the hub must refuse during the TLS handshake. Each
// refusal is clear to the client and leaves the server serving the next
// agent.
func TestRefusedClientCertificates(t *testing.T) {
	h := startHub(t)
	foreign := testkit.NewPKI(t)
	for _, tc := range []struct {
		name  string
		cfg   func(t *testing.T) *tls.Config
		alert string // what the client reads after the handshake
	}{
		{"foreign CA", func(t *testing.T) *tls.Config {
			cert, key := foreign.Agent(t, "press-1", "DE-01")
			c, err := pki.ClientTLS(cert, key, h.pki.Paths.CACert, "localhost")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, "unknown certificate authority"},
		{"expired", func(t *testing.T) *tls.Config {
			certPEM, keyPEM, err := pki.IssueAgent(h.pki.Dir, pki.AgentRequest{ID: "press-1", Plant: "DE-01", Validity: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			waitExpired(t, certPEM)
			cert, key := writePair(t, certPEM, keyPEM)
			c, err := pki.ClientTLS(cert, key, h.pki.Paths.CACert, "localhost")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, "expired certificate"},
		{"no certificate", func(t *testing.T) *tls.Config {
			c := h.agentTLS(t, "press-1", "DE-01")
			c.Certificates = nil
			return c
		}, "certificate required"},
		{"hub's server certificate as client certificate", func(t *testing.T) *tls.Config {
			c, err := pki.ClientTLS(h.pki.Paths.HubCert, h.pki.Paths.HubKey, h.pki.Paths.CACert, "localhost")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, "bad certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg(t)

			// Raw TLS: under TLS 1.3 the client finishes its handshake
			// first; the server's verdict arrives as an alert on read.
			conn, err := tls.Dial("tcp", h.srv.Addr(), cfg.Clone())
			if err == nil {
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.alert) {
				t.Fatalf("raw TLS: %v, want an alert %q", err, tc.alert)
			}

			// gRPC: the stream fails as unavailable. The alert's text is in
			// the error only when gRPC read it before its own write to the
			// closed connection failed.
			if err := refusedStream(t, h.dial(t, cfg)); status.Code(err) != codes.Unavailable {
				t.Fatalf("gRPC stream: %v, want Unavailable", err)
			}

			h.deliver(t, "press-2", "after-"+strings.ReplaceAll(tc.name, " ", "-"))
		})
	}
	if got := len(journaledIDs(t, h.j)); got != 4 {
		t.Fatalf("journal holds %d events, want the 4 of the good agent", got)
	}
	// Each refusal is visible at the hub: a log line and a counter.
	if n := strings.Count(h.logs.String(), "refused during the TLS handshake"); n < 4 {
		t.Fatalf("hub logged %d refused handshakes, want at least 4:\n%s", n, h.logs.String())
	}
	if got := (counterOf(t, h.reg, "plantsync_hub_ingest_stream_errors_total", "handshake")); got < 4 {
		t.Fatalf("stream_errors_total{kind=handshake} = %v, want at least 4", got)
	}
}

// counterOf finds one labelled counter in a registry's gathered metrics.
func counterOf(t *testing.T, reg *prometheus.Registry, name, kind string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("%s{kind=%q} not found", name, kind)
	return 0
}

// refusedStream opens a stream, says hello and returns the error that ends
// it, failing the test if the hub welcomes the stream.
func refusedStream(t *testing.T, c pb.UplinkClient) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Stream(ctx)
	if err != nil {
		return err
	}
	_ = st.Send(hello("press-1", "e1"))
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		if m.GetWelcome() != nil {
			t.Fatal("hub welcomed a stream with a refused certificate")
		}
	}
}

// waitExpired waits until a certificate issued with a 1 ms validity has
// expired: x509 keeps whole seconds, so NotAfter is at most 1 ms ahead.
func waitExpired(t *testing.T, certPEM []byte) {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(c.NotAfter); d > time.Second {
		t.Fatalf("certificate valid until %s, want it expired within a second", c.NotAfter)
	} else if d >= 0 {
		time.Sleep(d + time.Millisecond)
	}
}

func TestHelloWithAnotherAgentIDIsPermissionDenied(t *testing.T) {
	h := startHub(t)
	s := open(t, h.dial(t, h.agentTLS(t, "press-1", "DE-01")))
	s.send(hello("press-2", "e1"))
	err := s.recvErr()
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("hello as press-2 with press-1's certificate: %v, want PermissionDenied", err)
	}
	msg := status.Convert(err).Message()
	for _, want := range []string{`certificate is for agent "press-1" but hello says "press-2"`, `set agent.id to "press-1"`, `issue a certificate for "press-2"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if got := metricValue(t, h.reg, "plantsync_hub_ingest_stream_errors_total", "identity"); got != 1 {
		t.Errorf("stream_errors_total{kind=identity} = %v, want 1", got)
	}
	if logs := h.logs.String(); !strings.Contains(logs, "agent hello does not match its certificate") || !strings.Contains(logs, "cert_agent=press-1") {
		t.Errorf("the refusal is not logged:\n%s", logs)
	}
	h.deliver(t, "press-1", "e1")
}

func TestFirstMessageMustBeHello(t *testing.T) {
	h := startHub(t)
	s := open(t, h.dial(t, h.agentTLS(t, "press-1", "DE-01")))
	s.send(batch(1, 1, encode(t, ev{"x-1", 1, "DE-01"})))
	err := s.recvErr()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "the first message of a stream must be hello") {
		t.Fatalf("batch before hello: %v, want InvalidArgument", err)
	}
	if ids := journaledIDs(t, h.j); len(ids) != 0 {
		t.Fatalf("a batch before hello was journaled: %v", ids)
	}
	h.deliver(t, "press-1", "e1")
}

func TestProtocolViolationsEndTheStream(t *testing.T) {
	h := startHub(t)
	tlsCfg := h.agentTLS(t, "press-1", "DE-01")
	for _, tc := range []struct {
		name string
		msg  func(t *testing.T) *pb.AgentMessage
		want string
	}{
		{"second hello", func(*testing.T) *pb.AgentMessage { return hello("press-1", "e1") }, "hello sent twice"},
		{"batch over max_batch_events", func(t *testing.T) *pb.AgentMessage {
			return batch(1, 101, events(t, "big", 1, 101)...)
		}, "batch of 101 events exceeds max_batch_events 100"},
		{"sequence outside the batch", func(t *testing.T) *pb.AgentMessage {
			return batch(1, 2, encode(t, ev{"o-1", 1, "DE-01"}), encode(t, ev{"o-3", 3, "DE-01"}))
		}, "sequence 3 outside or out of order"},
		{"reversed batch", func(*testing.T) *pb.AgentMessage { return batch(5, 4) }, "batch sequences 5..4 are reversed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, h.dial(t, tlsCfg))
			s.hello("press-1", "e1")
			s.send(tc.msg(t))
			err := s.recvErr()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want InvalidArgument with %q", err, tc.want)
			}
		})
	}
	if ids := journaledIDs(t, h.j); len(ids) != 0 {
		t.Fatalf("refused batches were journaled: %v", ids)
	}
	h.deliver(t, "press-1", "e1")
}

// An event the agent may not send (another plant than its certificate's)
// or cannot be decoded is acked, kept in the rejected store with the
// reason, and the stream goes on.
func TestRefusedEventsAreAckedAndKeptAsRejected(t *testing.T) {
	h := startHub(t)
	s := open(t, h.dial(t, h.agentTLS(t, "press-1", "DE-01")))
	if w := s.hello("press-1", "e1"); w.GetResumeAfter() != 0 {
		t.Fatalf("resume_after of a new epoch = %d, want 0", w.GetResumeAfter())
	}
	s.send(batch(1, 3,
		encode(t, ev{"ok-1", 1, "DE-01"}),
		encode(t, ev{"foreign-2", 2, "FR-02"}),
		encode(t, ev{"ok-3", 3, "DE-01"}),
	))
	s.awaitAck(3)
	s.send(batch(4, 5, []byte{0xff, 0xff, 0xff}, encode(t, ev{"ok-5", 5, "DE-01"})))
	s.awaitAck(5)
	s.send(batch(6, 6, encode(t, ev{"ok-6", 6, "DE-01"})))
	s.awaitAck(6)

	if ids := journaledIDs(t, h.j); strings.Join(ids, ",") != "ok-1,ok-3,ok-5,ok-6" {
		t.Fatalf("journaled %v, want ok-1,ok-3,ok-5,ok-6", ids)
	}
	// Ingest hands each journaled event on decoded, so the pipeline does
	// not decode it again.
	handed, err := h.j.ReadDecoded(0, 10)
	if err != nil || len(handed) != 4 {
		t.Fatalf("ReadDecoded: %d records, %v", len(handed), err)
	}
	for _, r := range handed {
		var want pb.Event
		if err := proto.Unmarshal(r.Event, &want); err != nil {
			t.Fatal(err)
		}
		if r.Decoded == nil || !proto.Equal(r.Decoded, &want) {
			t.Errorf("record %d (%s): handed-over event %v, want the decoded stored event", r.Position, r.EventID, r.Decoded)
		}
	}
	rej, err := h.j.Rejected(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 2 {
		t.Fatalf("rejected store holds %d, want 2: %+v", len(rej), rej)
	}
	if rej[0].EventID != "foreign-2" || !strings.Contains(rej[0].Reason, `plant "FR-02" is not the plant "DE-01" of agent "press-1"'s certificate`) {
		t.Errorf("rejected[0] = %s %q", rej[0].EventID, rej[0].Reason)
	}
	if !strings.Contains(rej[1].Reason, "event 0 of batch 4..5 does not decode") {
		t.Errorf("rejected[1] reason = %q", rej[1].Reason)
	}
	if got := metricValue(t, h.reg, "plantsync_hub_ingest_events_total", "rejected"); got != 2 {
		t.Errorf("events_total{result=rejected} = %v, want 2", got)
	}
	if w, _ := h.j.Resume(ingest.AgentProducer("press-1"), "e1"); w != 6 {
		t.Errorf("watermark %d, want 6: rejected events advance it too", w)
	}
}

// After a reconnect with the same epoch, Welcome.resume_after is the last
// committed sequence, and a batch resent anyway is dropped by the
// (agent, epoch) watermark; the same holds after a hub restart.
func TestResentBatchIsDroppedByWatermark(t *testing.T) {
	h := startHub(t)
	tlsCfg := h.agentTLS(t, "press-1", "DE-01")
	s := open(t, h.dial(t, tlsCfg))
	s.hello("press-1", "e1")
	s.send(batch(1, 3, events(t, "a", 1, 3)...))
	s.send(batch(4, 5, events(t, "a", 4, 5)...))
	s.awaitAck(5)
	s.close()

	s = open(t, h.dial(t, tlsCfg))
	if w := s.hello("press-1", "e1"); w.GetResumeAfter() != 5 {
		t.Fatalf("resume_after after reconnect = %d, want 5", w.GetResumeAfter())
	}
	// An agent that lost its ack resends; the overlap is dropped.
	s.send(batch(4, 7, events(t, "a", 4, 7)...))
	s.awaitAck(7)
	s.close()
	if st := h.j.Stats(); st.JournaledTotal != 7 || st.DuplicateTotal != 2 {
		t.Fatalf("journaled %d, duplicates %d; want 7 and 2", st.JournaledTotal, st.DuplicateTotal)
	}

	h.stop(t)
	h.start(t)
	s = open(t, h.dial(t, tlsCfg))
	if w := s.hello("press-1", "e1"); w.GetResumeAfter() != 7 {
		t.Fatalf("resume_after after hub restart = %d, want 7", w.GetResumeAfter())
	}
	s.send(batch(1, 7, events(t, "a", 1, 7)...))
	s.awaitAck(7)
	if ids := journaledIDs(t, h.j); len(ids) != 7 {
		t.Fatalf("journal holds %d events, want 7: %v", len(ids), ids)
	}
}

// A new epoch (the agent's buffer was lost) restarts sequences at 1; the
// watermark does not apply, and the events it resends are dropped by id.
func TestNewEpochWithSameIDsIsDroppedByID(t *testing.T) {
	h := startHub(t)
	tlsCfg := h.agentTLS(t, "press-1", "DE-01")
	s := open(t, h.dial(t, tlsCfg))
	s.hello("press-1", "old")
	s.send(batch(1, 3, events(t, "m", 1, 3)...))
	s.awaitAck(3)
	s.close()

	s = open(t, h.dial(t, tlsCfg))
	if w := s.hello("press-1", "new"); w.GetResumeAfter() != 0 {
		t.Fatalf("resume_after of a new epoch = %d, want 0", w.GetResumeAfter())
	}
	// The broker redelivers m-2 and m-3 under new sequences, then m-4.
	s.send(batch(1, 3, encode(t, ev{"m-2", 1, "DE-01"}), encode(t, ev{"m-3", 2, "DE-01"}), encode(t, ev{"m-4", 3, "DE-01"})))
	s.awaitAck(3)
	s.close()
	if ids := journaledIDs(t, h.j); strings.Join(ids, ",") != "m-1,m-2,m-3,m-4" {
		t.Fatalf("journaled %v, want m-1..m-4 once each", ids)
	}
	if st := h.j.Stats(); st.DuplicateTotal != 2 {
		t.Fatalf("duplicates %d, want 2", st.DuplicateTotal)
	}
	if got := metricValue(t, h.reg, "plantsync_hub_ingest_events_total", "duplicate"); got != 2 {
		t.Errorf("events_total{result=duplicate} = %v, want 2", got)
	}
	s = open(t, h.dial(t, tlsCfg))
	if w := s.hello("press-1", "new"); w.GetResumeAfter() != 3 {
		t.Fatalf("resume_after of the new epoch after reconnect = %d, want 3", w.GetResumeAfter())
	}
}

// metricValue is the value of the series of counter vector name whose one
// label has value label, or 0 when it has not been counted yet.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
