package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/internal/buildinfo"
	"github.com/plantsync/plantsync/internal/pki"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// AgentProducer is the journal producer name of an agent.
func AgentProducer(id string) string { return "agent:" + id }

// Live is what ingest knows of a connected agent beyond the journal.
type Live struct {
	Connected      bool
	Since          time.Time
	Remote         string
	BufferedEvents uint64
	BufferedBytes  uint64
	DroppedTotal   uint64
	ReportedAt     time.Time
}

// Server is the Uplink gRPC service.
type Server struct {
	pb.UnimplementedUplinkServer

	cfg     Config
	journal journal.Journal
	log     *slog.Logger
	m       *metrics

	grpc     *grpc.Server
	lis      net.Listener
	serveErr chan error
	stopOnce sync.Once
	// stopping is closed by Shutdown: open streams end at once (agents
	// never end theirs), so GracefulStop does not wait out its deadline.
	stopping chan struct{}

	mu   sync.Mutex
	live map[string]*Live
}

// New builds the server; Start listens.
func New(cfg Config, j journal.Journal, logger *slog.Logger, reg prometheus.Registerer) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, journal: j, log: logger, m: newMetrics(reg), live: map[string]*Live{}, stopping: make(chan struct{})}
}

// Start loads the TLS material, listens and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	tlsCfg, err := pki.ServerTLS(s.cfg.TLS.Cert, s.cfg.TLS.Key, s.cfg.TLS.ClientCA)
	if err != nil {
		return fmt.Errorf("grpc.tls: %w", err)
	}
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("grpc.listen %s: %w", s.cfg.Listen, err)
	}
	s.lis = lis
	s.grpc = grpc.NewServer(
		grpc.Creds(loggedCreds{
			TransportCredentials: credentials.NewTLS(tlsCfg),
			log:                  s.log,
			refused:              func() { s.m.streamErrors.WithLabelValues("handshake").Inc() },
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(16<<20),
		grpc.ConnectionTimeout(10*time.Second),
	)
	pb.RegisterUplinkServer(s.grpc, s)
	s.serveErr = make(chan error, 1)
	go func() { s.serveErr <- s.grpc.Serve(lis) }()
	s.log.Info("agent ingest listening", "addr", lis.Addr().String())
	return nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() string {
	if s.lis == nil {
		return ""
	}
	return s.lis.Addr().String()
}

// Shutdown stops accepting streams and waits for open ones to end, up to
// ctx's deadline, then cuts them. Agents resend whatever was not acked.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.grpc == nil {
		return nil
	}
	s.stopOnce.Do(func() {
		close(s.stopping)
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpc.Stop()
			<-done
		}
		s.log.Info("agent ingest stopped")
	})
	return nil
}

// Live returns a copy of the connection state per agent id.
func (s *Server) Live() map[string]Live {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Live, len(s.live))
	for k, v := range s.live {
		out[k] = *v
	}
	return out
}

// ConnectedAgents lists the ids of agents with an open stream, sorted.
func (s *Server) ConnectedAgents() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, l := range s.live {
		if l.Connected {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Stream implements pb.UplinkServer: one agent's session.
func (s *Server) Stream(stream pb.Uplink_StreamServer) error {
	ctx := stream.Context()
	id, plant, remote, err := peerIdentity(ctx)
	if err != nil {
		s.m.streamErrors.WithLabelValues("unauthenticated").Inc()
		return status.Error(codes.Unauthenticated, err.Error())
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	switch {
	case hello == nil:
		s.m.streamErrors.WithLabelValues("protocol").Inc()
		return status.Error(codes.InvalidArgument, "the first message of a stream must be hello")
	case hello.GetAgentId() != id:
		s.m.streamErrors.WithLabelValues("identity").Inc()
		s.log.Warn("agent hello does not match its certificate", "cert_agent", id, "hello_agent", hello.GetAgentId(), "remote", remote)
		return status.Errorf(codes.PermissionDenied, "certificate is for agent %q but hello says %q; set agent.id to %q or issue a certificate for %q", id, hello.GetAgentId(), id, hello.GetAgentId())
	case hello.GetEpoch() == "":
		s.m.streamErrors.WithLabelValues("protocol").Inc()
		return status.Error(codes.InvalidArgument, "hello.epoch is empty")
	case hello.GetProtocolVersion() > pb.ProtocolVersion_PROTOCOL_VERSION_1:
		s.m.streamErrors.WithLabelValues("protocol").Inc()
		return status.Errorf(codes.FailedPrecondition, "agent speaks uplink protocol %d, this hub up to %d; upgrade the hub first", hello.GetProtocolVersion(), pb.ProtocolVersion_PROTOCOL_VERSION_1)
	}
	epoch := hello.GetEpoch()
	producer := AgentProducer(id)
	resume, err := s.journal.Resume(producer, epoch)
	if err != nil {
		return status.Errorf(codes.Unavailable, "read resume point: %v", err)
	}
	if err := stream.Send(&pb.HubMessage{Msg: &pb.HubMessage_Welcome{Welcome: &pb.Welcome{
		ResumeAfter:        resume,
		MaxInflightBatches: s.cfg.MaxInflightBatches,
		MaxBatchEvents:     s.cfg.MaxBatchEvents,
		HubVersion:         buildinfo.Version,
	}}}); err != nil {
		return err
	}
	s.setConnected(id, remote, true)
	defer s.setConnected(id, remote, false)
	s.log.Info("agent connected", "agent", id, "plant", plant, "epoch", epoch, "resume_after", resume, "remote", remote)
	s.m.streams.Inc()
	defer s.m.streams.Dec()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sess := &session{s: s, stream: stream, id: id, plant: plant, epoch: epoch, producer: producer,
		ackSignal: make(chan struct{}, 1), failed: make(chan error, 1), cancel: cancel}
	ackDone := make(chan error, 1)
	go func() { ackDone <- sess.sendAcks(ctx) }()
	recvDone := make(chan error, 1)
	go func() { recvDone <- sess.receive(ctx) }()
	select {
	case err = <-recvDone:
	case <-s.stopping:
		// Batches already queued still commit before the journal closes;
		// whatever was not acked is resent after the agent reconnects.
		err = status.Error(codes.Unavailable, "hub shutting down; reconnect later")
	}
	cancel()
	select {
	case ferr := <-sess.failed:
		// A failed journal commit ended the stream: the agent resends
		// from its last ack after reconnecting.
		err = ferr
	default:
	}
	if ackErr := <-ackDone; err == nil && ackErr != nil && !errors.Is(ackErr, context.Canceled) {
		err = ackErr
	}
	s.log.Info("agent disconnected", "agent", id, "reason", errText(err))
	return err
}

func errText(err error) string {
	if err == nil {
		return "closed by agent"
	}
	return err.Error()
}

func peerIdentity(ctx context.Context) (id, plant, remote string, err error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", "", "", errors.New("no peer information")
	}
	remote = p.Addr.String()
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", "", remote, errors.New("connection is not TLS")
	}
	id, plant, err = pki.PeerIdentity(info.State)
	return id, plant, remote, err
}

func (s *Server) setConnected(id, remote string, connected bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.live[id]
	if l == nil {
		l = &Live{}
		s.live[id] = l
	}
	l.Connected, l.Remote = connected, remote
	if connected {
		l.Since = time.Now()
	}
}

func (s *Server) setStatus(id string, st *pb.AgentStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.live[id]; l != nil {
		l.BufferedEvents, l.BufferedBytes, l.DroppedTotal = st.GetBufferedEvents(), st.GetBufferedBytes(), st.GetDroppedEventsTotal()
		l.ReportedAt = time.Now()
	}
}

// session is one open stream.
type session struct {
	s                *Server
	stream           pb.Uplink_StreamServer
	id, plant, epoch string
	producer         string
	ackThrough       atomic.Uint64
	ackSignal        chan struct{}
	failed           chan error
	// cancel ends the stream (unblocking Recv) when a commit fails.
	cancel context.CancelFunc
}

func (ss *session) receive(ctx context.Context) error {
	for {
		msg, err := ss.stream.Recv()
		if err != nil {
			return err
		}
		switch m := msg.GetMsg().(type) {
		case *pb.AgentMessage_Batch:
			if err := ss.batch(ctx, m.Batch); err != nil {
				return err
			}
		case *pb.AgentMessage_Status:
			ss.s.setStatus(ss.id, m.Status)
		case *pb.AgentMessage_Hello:
			return status.Error(codes.InvalidArgument, "hello sent twice on one stream")
		default:
			ss.s.m.streamErrors.WithLabelValues("protocol").Inc()
			return status.Error(codes.InvalidArgument, "unknown agent message")
		}
	}
}

func (ss *session) batch(ctx context.Context, b *pb.Batch) error {
	s := ss.s
	if uint32(len(b.GetEvents())) > s.cfg.MaxBatchEvents {
		s.m.streamErrors.WithLabelValues("protocol").Inc()
		return status.Errorf(codes.InvalidArgument, "batch of %d events exceeds max_batch_events %d", len(b.GetEvents()), s.cfg.MaxBatchEvents)
	}
	if b.GetLastSequence() < b.GetFirstSequence() {
		return status.Errorf(codes.InvalidArgument, "batch sequences %d..%d are reversed", b.GetFirstSequence(), b.GetLastSequence())
	}
	jb := &journal.Batch{
		Producer:     ss.producer,
		Epoch:        ss.epoch,
		Agent:        &journal.AgentInfo{ID: ss.id, Plant: ss.plant},
		LastSequence: b.GetLastSequence(),
		Events:       make([]journal.Incoming, 0, len(b.GetEvents())),
	}
	var prev uint64
	for i, raw := range b.GetEvents() {
		// Each event is decoded into its own message: the journal hands it
		// on to the pipeline, which then need not decode it again.
		ev := &pb.Event{}
		in := journal.Incoming{Raw: raw}
		if err := proto.Unmarshal(raw, ev); err != nil {
			// Sequence unknown: keep it with the reason, never stall.
			in.Rejected = fmt.Sprintf("event %d of batch %d..%d does not decode: %v", i, b.GetFirstSequence(), b.GetLastSequence(), err)
			jb.Events = append(jb.Events, in)
			continue
		}
		in.Sequence, in.ID = ev.GetSequence(), ev.GetId()
		switch {
		case in.Sequence <= prev || in.Sequence < b.GetFirstSequence() || in.Sequence > b.GetLastSequence():
			return status.Errorf(codes.InvalidArgument, "event %d has sequence %d outside or out of order in batch %d..%d", i, in.Sequence, b.GetFirstSequence(), b.GetLastSequence())
		case in.ID == "":
			in.Rejected = "event has no id"
		case ev.GetPlant() != ss.plant:
			in.Rejected = fmt.Sprintf("plant %q is not the plant %q of agent %q's certificate", ev.GetPlant(), ss.plant, ss.id)
		}
		if in.Rejected == "" {
			in.Decoded = ev
		}
		prev = in.Sequence
		jb.Events = append(jb.Events, in)
	}
	s.m.batches.Inc()
	last := b.GetLastSequence()
	return s.journal.CommitAsync(ctx, jb, func(o journal.Outcome, err error) {
		if err != nil {
			select {
			case ss.failed <- status.Errorf(codes.Unavailable, "journal: %v", err):
			default:
			}
			ss.cancel()
			return
		}
		s.m.events.WithLabelValues("journaled").Add(float64(o.Journaled))
		s.m.events.WithLabelValues("duplicate").Add(float64(o.Duplicates))
		s.m.events.WithLabelValues("rejected").Add(float64(o.Rejected))
		if o.Rejected > 0 {
			s.log.Warn("rejected events from agent (kept in the rejected store)", "agent", ss.id, "count", o.Rejected)
		}
		ss.ackThrough.Store(last)
		select {
		case ss.ackSignal <- struct{}{}:
		default:
		}
	})
}

// sendAcks sends the latest cumulative ack whenever commits advance it. It
// runs apart from the journal's committer so a slow network never holds
// commits for other agents.
func (ss *session) sendAcks(ctx context.Context) error {
	var sent uint64
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ss.ackSignal:
		}
		through := ss.ackThrough.Load()
		if through <= sent {
			continue
		}
		if err := ss.stream.Send(&pb.HubMessage{Msg: &pb.HubMessage_Ack{Ack: &pb.Ack{ThroughSequence: through}}}); err != nil {
			return err
		}
		sent = through
	}
}
