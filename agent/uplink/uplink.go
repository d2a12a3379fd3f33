package uplink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/internal/buildinfo"
	"github.com/plantsync/plantsync/internal/pki"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Identity is who the agent says it is in Hello; the hub checks it against
// the client certificate.
type Identity struct {
	AgentID, Plant string
}

// State is the uplink's connection state for health and status.
type State struct {
	Connected    bool
	Since        time.Time
	LastError    string
	Reconnects   uint64
	AckedThrough uint64
}

// Uplink owns the stream to the hub.
type Uplink struct {
	cfg Config
	buf *buffer.Buffer
	id  Identity
	log *slog.Logger
	m   *metrics

	conn     *grpc.ClientConn
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once

	mu    sync.Mutex
	state State
}

// New builds an uplink; Start dials.
func New(cfg Config, buf *buffer.Buffer, id Identity, logger *slog.Logger, reg prometheus.Registerer) *Uplink {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Uplink{cfg: cfg, buf: buf, id: id, log: logger, m: newMetrics(reg)}
}

// Start loads the TLS material and starts the connect loop. It returns at
// once; connection failures are retried with backoff and shown in State.
func (u *Uplink) Start(ctx context.Context) error {
	tlsCfg, err := pki.ClientTLS(u.cfg.TLS.Cert, u.cfg.TLS.Key, u.cfg.TLS.CA, u.cfg.TLS.ServerName)
	if err != nil {
		return fmt.Errorf("uplink.tls: %w", err)
	}
	conn, err := grpc.NewClient(u.cfg.Hub,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		// The channel redials on a backoff of its own (gRPC's default: 1 s
		// growing to 120 s) and fails streams fast meanwhile, so without
		// this the agent would wait out gRPC's backoff, not backoff_max,
		// before seeing a hub that is back. MinConnectTimeout must be set
		// with it, or a dial attempt is cut after the (short) backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay: u.cfg.BackoffInitial, Multiplier: 2, Jitter: 0.2, MaxDelay: u.cfg.BackoffMax,
			},
			MinConnectTimeout: 20 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)),
	)
	if err != nil {
		return fmt.Errorf("uplink.hub %q: %w", u.cfg.Hub, err)
	}
	u.conn = conn
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	u.cancel = cancel
	u.done = make(chan struct{})
	go u.run(runCtx)
	return nil
}

// Shutdown closes the stream; unacked events stay buffered for next time.
func (u *Uplink) Shutdown(ctx context.Context) error {
	if u.cancel == nil {
		return nil
	}
	u.stopOnce.Do(func() {
		u.cancel()
		select {
		case <-u.done:
		case <-ctx.Done():
		}
		_ = u.conn.Close()
		u.log.Info("uplink stopped")
	})
	return nil
}

// State returns a snapshot.
func (u *Uplink) State() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.state
}

func (u *Uplink) setConnected(connected bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state.Connected != connected {
		u.state.Since = time.Now()
	}
	u.state.Connected = connected
	if err != nil {
		u.state.LastError = err.Error()
	}
	if connected {
		u.m.connected.Set(1)
	} else {
		u.m.connected.Set(0)
	}
}

func (u *Uplink) run(ctx context.Context) {
	defer close(u.done)
	backoff := u.cfg.BackoffInitial
	for ctx.Err() == nil {
		welcomed, err := u.session(ctx)
		if ctx.Err() != nil {
			return
		}
		u.setConnected(false, err)
		u.mu.Lock()
		u.state.Reconnects++
		u.mu.Unlock()
		u.m.reconnects.Inc()
		if welcomed {
			backoff = u.cfg.BackoffInitial
		}
		// Full jitter keeps a region's agents from reconnecting in step
		// after a hub restart.
		wait := backoff/2 + rand.N(backoff/2+1)
		u.log.Warn("uplink disconnected; retrying", "hub", u.cfg.Hub, "error", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, u.cfg.BackoffMax)
	}
}

// session runs one stream until it fails. It reports whether the hub
// welcomed the agent (so the backoff can reset).
func (u *Uplink) session(ctx context.Context) (welcomed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewUplinkClient(u.conn).Stream(ctx, grpc.WaitForReady(false))
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	if err := stream.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Hello{Hello: &pb.Hello{
		AgentId: u.id.AgentID, Plant: u.id.Plant, Epoch: u.buf.Epoch(),
		AgentVersion: buildinfo.Version, ProtocolVersion: pb.ProtocolVersion_PROTOCOL_VERSION_1,
	}}}); err != nil {
		return false, fmt.Errorf("send hello: %w", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return false, fmt.Errorf("await welcome: %w", err)
	}
	w := first.GetWelcome()
	if w == nil {
		return false, errors.New("hub answered hello without welcome")
	}
	resume := w.GetResumeAfter()
	// Everything through the resume point is at the hub; whatever was in
	// flight beyond it is not, and is sent again.
	u.buf.Ack(resume)
	u.buf.ResetSent(resume)
	u.setAcked(resume)
	u.setConnected(true, nil)
	u.log.Info("uplink connected", "hub", u.cfg.Hub, "epoch", u.buf.Epoch(), "resume_after", resume)

	maxInflight := u.cfg.MaxInflight
	if n := int(w.GetMaxInflightBatches()); n > 0 && n < maxInflight {
		maxInflight = n
	}
	maxEvents := u.cfg.BatchMaxEvents
	if n := int(w.GetMaxBatchEvents()); n > 0 && n < maxEvents {
		maxEvents = n
	}
	fl := newFlight(maxInflight)
	recvErr := make(chan error, 1)
	go func() { recvErr <- u.receive(stream, fl) }()
	sendErr := u.send(ctx, stream, fl, resume, maxEvents)
	cancel()
	if err := <-recvErr; sendErr == nil || errors.Is(sendErr, context.Canceled) {
		return true, err
	}
	return true, sendErr
}

func (u *Uplink) setAcked(seq uint64) {
	u.mu.Lock()
	u.state.AckedThrough = seq
	u.mu.Unlock()
}

func (u *Uplink) receive(stream pb.Uplink_StreamClient, fl *flight) error {
	for {
		msg, err := stream.Recv()
		if err != nil {
			fl.fail()
			return err
		}
		ack := msg.GetAck()
		if ack == nil {
			continue
		}
		through := ack.GetThroughSequence()
		u.buf.Ack(through)
		u.setAcked(through)
		u.m.ackedBatches.Add(float64(fl.ack(through)))
	}
}

func (u *Uplink) send(ctx context.Context, stream pb.Uplink_StreamClient, fl *flight, cursor uint64, maxEvents int) error {
	status := time.NewTicker(u.cfg.StatusInterval)
	defer status.Stop()
	sendStatus := func() error {
		st := u.buf.Stats()
		return stream.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Status{Status: &pb.AgentStatus{
			BufferedEvents: st.Events, BufferedBytes: uint64(st.Bytes), DroppedEventsTotal: st.DroppedTotal,
		}}})
	}
	if err := sendStatus(); err != nil {
		return err
	}
	for {
		if err := fl.acquire(ctx); err != nil {
			return err
		}
		changed := u.buf.Changed()
		batch, err := u.buf.ReadForSend(cursor, maxEvents, u.cfg.BatchMaxBytes)
		if err != nil {
			return fmt.Errorf("read buffer: %w", err)
		}
		if len(batch.Events) == 0 {
			fl.release()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-fl.failed:
				return errors.New("stream closed")
			case <-status.C:
				if err := sendStatus(); err != nil {
					return err
				}
			case <-changed:
			}
			continue
		}
		fl.sent(batch.Last)
		if err := stream.Send(&pb.AgentMessage{Msg: &pb.AgentMessage_Batch{Batch: &pb.Batch{
			FirstSequence: batch.First, LastSequence: batch.Last, Events: batch.Events,
		}}}); err != nil {
			return fmt.Errorf("send batch %d..%d: %w", batch.First, batch.Last, err)
		}
		u.m.sentBatches.Inc()
		u.m.sentEvents.Add(float64(len(batch.Events)))
		cursor = batch.Last
		select {
		case <-status.C:
			if err := sendStatus(); err != nil {
				return err
			}
		default:
		}
	}
}

// flight bounds unacknowledged batches.
type flight struct {
	tokens chan struct{}
	failed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	lasts  []uint64
}

func newFlight(n int) *flight {
	return &flight{tokens: make(chan struct{}, n), failed: make(chan struct{})}
}

func (f *flight) acquire(ctx context.Context) error {
	select {
	case f.tokens <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-f.failed:
		return errors.New("stream closed")
	}
}

func (f *flight) release() { <-f.tokens }

func (f *flight) sent(last uint64) {
	f.mu.Lock()
	f.lasts = append(f.lasts, last)
	f.mu.Unlock()
}

// ack releases every batch the cumulative ack covers and returns how many.
func (f *flight) ack(through uint64) int {
	f.mu.Lock()
	n := 0
	for n < len(f.lasts) && f.lasts[n] <= through {
		n++
	}
	f.lasts = f.lasts[n:]
	f.mu.Unlock()
	for i := 0; i < n; i++ {
		f.release()
	}
	return n
}

func (f *flight) fail() { f.once.Do(func() { close(f.failed) }) }
