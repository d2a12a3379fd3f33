package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	"github.com/plantsync/plantsync/internal/config"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// ErrNotStarted is returned by operations that need a started source
// (quarantine replay).
var ErrNotStarted = errors.New("mqtt source not started")

// Factory registers the type with the agent.
var Factory = source.Factory{
	Type:             "mqtt",
	NewDefaultConfig: func() source.Config { return NewDefaultConfig() },
	New: func(cfg source.Config, env source.Env) (source.Source, error) {
		c, ok := cfg.(*Config)
		if !ok {
			return nil, fmt.Errorf("mqtt source: config of type %T", cfg)
		}
		return New(c, env)
	},
}

// Source is one MQTT connection with its subscriptions.
type Source struct {
	cfg    *Config
	env    source.Env
	log    *slog.Logger
	m      *metrics
	subs   []*compiledSub
	opts   *paho.ClientOptions
	window *recentIDs
	sp     *sparkplugState
	hostTS time.Time // Sparkplug STATE timestamp of this run
	// stateTopic, onlineState and offlineState are this host's STATE
	// topic and payloads, fixed for the run (set with hostTS).
	stateTopic                string
	onlineState, offlineState []byte

	client   paho.Client
	q        *quarantine
	ctx      context.Context
	cancel   context.CancelFunc
	lost     chan struct{}
	acks     *acker
	bg       sync.WaitGroup // connect loop, acker, side publishes
	inflight inflightCount  // appends whose commit is not known yet
	// slots holds a token per received message not yet finished
	// (cfg.MaxInflight of them): onMessage waits for one, so a backlog
	// stays in the broker.
	slots chan struct{}
	// accepting is false before Start and from Shutdown on: messages that
	// arrive then are not acknowledged, so the broker redelivers them.
	accepting atomic.Bool

	mu      sync.Mutex
	health  source.Health
	started bool
	stopped bool
}

// New checks the config, reads the password and TLS files and registers
// the metrics; Start connects.
func New(cfg *Config, env source.Env) (*Source, error) {
	if errs := cfg.Validate("mqtt"); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	s := &Source{cfg: cfg, env: env, log: env.Logger, health: source.Health{State: source.StateStarting},
		window: newRecentIDs(env.Name, cfg.ContentHashWindow), sp: newSparkplugState(env.Name),
		lost: make(chan struct{}, 1), slots: make(chan struct{}, cfg.MaxInflight)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if env.Sink == nil {
		return nil, errors.New("mqtt source: no sink")
	}
	for i, sub := range cfg.Subscriptions {
		cs, errs := compileSubscription(sub, fmt.Sprintf("subscriptions[%d]", i))
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		s.subs = append(s.subs, cs)
	}
	opts, err := s.clientOptions()
	if err != nil {
		return nil, err
	}
	s.opts = opts
	m, err := newMetrics(env.Registerer, s)
	if err != nil {
		return nil, fmt.Errorf("mqtt source metrics: %w", err)
	}
	s.m = m
	return s, nil
}

func (s *Source) clientOptions() (*paho.ClientOptions, error) {
	c := s.cfg
	opts := paho.NewClientOptions()
	secure := false
	for _, b := range c.Brokers {
		opts.AddBroker(b)
		if u, err := url.Parse(b); err == nil && secureScheme(u.Scheme) {
			secure = true
		}
	}
	if secure || c.TLS.enabled() {
		tc, err := c.TLS.build()
		if err != nil {
			return nil, err
		}
		opts.SetTLSConfig(tc)
	}
	if c.Username != "" {
		user := c.Username
		if isSecretRef(user) {
			v, err := config.Secret("username", user)
			if err != nil {
				return nil, err
			}
			user = v
		}
		opts.SetUsername(user)
	}
	if c.Password != "" {
		pw, err := config.Secret("password", c.Password)
		if err != nil {
			return nil, err
		}
		opts.SetPassword(pw)
	}
	opts.SetClientID(c.ClientID).
		SetCleanSession(c.CleanSession).
		SetKeepAlive(c.KeepAlive).
		SetConnectTimeout(c.ConnectTimeout).
		SetWriteTimeout(c.ConnectTimeout).
		// The source reconnects by itself, with jitter and failover.
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		// Buffered reads and coalesced PUBACKs (conn.go).
		SetCustomOpenConnectionFn(dialBroker).
		// Ack after durable: the broker keeps a message until its event
		// is committed in the buffer.
		SetAutoAckDisabled(true).
		SetDefaultPublishHandler(s.onMessage).
		SetOnConnectHandler(s.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.setHealth(source.StateDegraded, false, fmt.Errorf("connection lost: %w", err))
			s.m.connected.Set(0)
			s.log.Warn("mqtt connection lost; reconnecting", "error", err)
			select {
			case s.lost <- struct{}{}:
			default:
			}
		})
	if host := c.Sparkplug.HostID; host != "" {
		s.hostTS = time.Now()
		s.stateTopic = sparkplugNamespace + "/" + spSTATE + "/" + host
		s.onlineState, s.offlineState = hostState(true, s.hostTS), hostState(false, s.hostTS)
		opts.SetBinaryWill(s.stateTopic, s.offlineState, 1, true)
	}
	return opts, nil
}

func (t TLSConfig) build() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // operator's explicit choice, documented as lab-only
	if t.CA != "" {
		raw, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("tls.ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(raw) {
			return nil, fmt.Errorf("tls.ca: %s holds no PEM certificate", t.CA)
		}
		tc.RootCAs = pool
	}
	if t.Cert != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("tls.cert/tls.key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Start opens the quarantine, loads the committed source state and
// connects in the background.
func (s *Source) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("mqtt source: Start called twice or after Shutdown")
	}
	q, err := openQuarantine(s.env.StateDir, s.cfg.QuarantineMaxEntries)
	if err != nil {
		return err
	}
	err = s.env.Sink.ReadState(s.env.Name, func(k, v []byte) error {
		if err := s.window.load(k, v); err != nil {
			return err
		}
		return s.sp.load(k, v)
	})
	if err != nil {
		_ = q.close()
		return fmt.Errorf("load committed mqtt source state: %w", err)
	}
	s.q = q
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.acks = newAcker(s.m.ackLatency)
	s.client = paho.NewClient(s.opts)
	s.started = true
	s.accepting.Store(true)
	s.bg.Add(2)
	go func() { defer s.bg.Done(); s.acks.run() }()
	go func() { defer s.bg.Done(); s.connectLoop() }()
	s.log.Info("mqtt source started", "brokers", s.cfg.Brokers, "client_id", s.cfg.ClientID,
		"subscriptions", len(s.subs), "quarantined", q.count())
	return nil
}

// connectLoop connects (trying the brokers in order), waits for the
// connection to drop and reconnects with exponential backoff and full
// jitter, so a fleet of agents does not reconnect in step.
func (s *Source) connectLoop() {
	backoff := s.cfg.ReconnectInitial
	for {
		tok := s.client.Connect()
		select {
		case <-tok.Done():
		case <-s.ctx.Done():
			<-tok.Done()
			return
		}
		if err := tok.Error(); err != nil {
			s.m.errors.WithLabelValues("connect").Inc()
			s.setHealth(source.StateDegraded, false, fmt.Errorf("connect: %w", err))
			wait := backoff/2 + rand.N(backoff/2+1)
			s.log.Warn("mqtt connect failed; retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
			backoff = min(backoff*2, s.cfg.ReconnectMax)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = s.cfg.ReconnectInitial
		select {
		case <-s.lost:
			s.m.reconnects.Inc()
		case <-s.ctx.Done():
			return
		}
	}
}

func (s *Source) onConnect(c paho.Client) {
	// paho runs this handler on its own goroutine, so waiting is fine. The
	// source reports running only once every subscription is in place.
	s.m.connected.Set(1)
	filters := map[string]byte{}
	for _, cs := range s.subs {
		filters[cs.topic.filter] = max(filters[cs.topic.filter], cs.cfg.QoS.Level())
	}
	if s.cfg.Sparkplug.HostID != "" {
		filters[s.stateTopic] = 1
	}
	tok := c.SubscribeMultiple(filters, nil)
	if !tok.WaitTimeout(s.cfg.ConnectTimeout) || tok.Error() != nil {
		err := fmt.Errorf("subscribe: %v", tok.Error())
		if tok.Error() == nil {
			err = errors.New("subscribe: no answer from the broker within connect_timeout")
		}
		s.m.errors.WithLabelValues("subscribe").Inc()
		s.setHealth(source.StateDegraded, true, err)
		s.log.Error("mqtt subscribe failed; reconnecting", "error", err)
		c.Disconnect(0) // the connect loop tries again
		select {
		case s.lost <- struct{}{}:
		default:
		}
		return
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for topic, code := range st.Result() {
			if code == 0x80 {
				err := fmt.Errorf("broker refused the subscription to %q (not authorised?)", topic)
				s.m.errors.WithLabelValues("subscribe").Inc()
				s.setHealth(source.StateDegraded, true, err)
				s.log.Error("mqtt subscription refused", "topic", topic)
				return
			}
		}
	}
	if s.cfg.Sparkplug.HostID != "" {
		ptok := c.Publish(s.stateTopic, 1, true, s.onlineState)
		if !ptok.WaitTimeout(s.cfg.ConnectTimeout) || ptok.Error() != nil {
			s.log.Warn("sparkplug STATE online not confirmed", "error", ptok.Error())
		}
	}
	s.setHealth(source.StateRunning, true, nil)
	// paho does not tell which of the brokers answered.
	s.log.Info("mqtt connected and subscribed", "brokers", s.cfg.Brokers, "filters", len(filters))
}

// inMsg is a message to map: live from the broker or replayed from the
// quarantine.
type inMsg struct {
	topic    string
	payload  []byte
	qos      byte
	received time.Time
}

// Outcomes of handling one message.
const (
	resultMapped      = "mapped"
	resultDropped     = "dropped"
	resultDuplicate   = "duplicate"
	resultIgnored     = "ignored"
	resultQuarantined = "quarantined"
	resultFailed      = "failed" // replay only: still does not map
)

// result is what became of a message, once it is known.
type result struct {
	kind     string
	reason   string
	location string
	err      error // the commit failed: the message must not be acknowledged
}

func (s *Source) onMessage(_ paho.Client, pm paho.Message) {
	recv := time.Now()
	s.m.received.Inc()
	if !s.accepting.Load() {
		return // not acknowledged: redelivered next session
	}
	if s.cfg.Sparkplug.HostID != "" && pm.Topic() == s.stateTopic {
		s.onOwnState(pm)
		s.acks.push(pm, recv)
		return
	}
	select {
	case s.slots <- struct{}{}:
	case <-s.ctx.Done():
		return // shutting down: not acknowledged, redelivered next session
	}
	// Topics are UTF-8 by the MQTT specification; a broker that passes
	// something else on must not poison the buffer (events are proto3).
	topic := strings.ToValidUTF8(pm.Topic(), "\uFFFD")
	s.handle(inMsg{topic: topic, payload: pm.Payload(), qos: pm.Qos(), received: recv}, false, func(r result) {
		<-s.slots
		if r.err == nil {
			s.acks.push(pm, recv)
		}
	})
}

// onOwnState re-asserts the host's online STATE if the broker shows it
// offline (e.g. the will of a connection that died after the new one came).
func (s *Source) onOwnState(pm paho.Message) {
	if string(pm.Payload()) == string(s.onlineState) {
		return
	}
	s.goPublish(s.stateTopic, 1, true, s.onlineState)
}

// match finds the first subscription whose filter matches topic.
func (s *Source) match(topic string) (*compiledSub, map[string]string) {
	for _, cs := range s.subs {
		if caps, ok := cs.topic.match(topic); ok {
			return cs, caps
		}
	}
	return nil, nil
}

// handle maps msg, commits what it yields and reports through finish
// (exactly once, possibly on another goroutine). With replay set, a
// message that still does not map is reported as failed instead of being
// quarantined again.
func (s *Source) handle(msg inMsg, replay bool, finish func(result)) {
	cs, caps := s.match(msg.topic)
	if cs == nil {
		s.fail(msg, &mapError{offset: -1, msg: "no subscription of this source matches the topic"}, replay, finish)
		return
	}
	if cs.format == FormatSparkplugB {
		s.handleSparkplug(cs, msg, replay, finish)
		return
	}
	m, merr := cs.mapPayload(msg.payload, msg.topic, caps)
	if merr != nil {
		s.fail(msg, merr, replay, finish)
		return
	}
	if m.dropped {
		s.m.dropped.Inc()
		finish(result{kind: resultDropped})
		return
	}
	occurred := msg.received
	if t, ok := m.fields[fieldOccurredAt].(time.Time); ok {
		occurred = t
	}
	ev := s.newEvent("", cs.cfg.EventType, msg.topic, occurred, msg.received)
	cs.schema.build(m.fields, ev)
	for k, v := range m.attrs {
		ev.Attributes[k] = v
	}
	if !cs.cfg.ContentHash {
		ev.Id = EventID(s.env.Plant, s.env.Name, m.msgID)
		ev.Attributes["message_id"] = m.msgID
		ev.CorrelationId = ev.Id
		if c := fieldValues(m.fields).str(fieldCorrelationID); c != "" {
			ev.CorrelationId = c
		}
		s.commit(msg, []*pb.Event{ev}, nil, resultMapped, finish, nil)
		return
	}
	e, hit, write, err := s.window.claim(hashMessage(msg.topic, msg.payload))
	if err != nil {
		finish(result{err: err})
		return
	}
	if hit {
		// A redelivery (or a byte-identical repeat inside the window): its
		// event is committed or about to be. Acknowledge it after that.
		s.m.duplicates.Inc()
		s.window.wait(e, func(committed bool) {
			if committed {
				finish(result{kind: resultDuplicate})
			} else {
				finish(result{err: errors.New("the first copy of this message was not committed")})
			}
		})
		return
	}
	ev.Id = e.id.String()
	ev.CorrelationId = ev.Id
	if c := fieldValues(m.fields).str(fieldCorrelationID); c != "" {
		ev.CorrelationId = c
	}
	s.commit(msg, []*pb.Event{ev}, []buffer.StateWrite{write}, resultMapped, finish, func(ok bool) { s.window.settle(e, ok) })
}

func (s *Source) handleSparkplug(cs *compiledSub, msg inMsg, replay bool, finish func(result)) {
	out, merr := s.sp.handle(msg.topic, msg.payload, func(id, typ, uriTopic string, occurred time.Time) *pb.Event {
		if occurred.IsZero() {
			occurred = msg.received
		}
		ev := s.newEvent(id, typ, uriTopic, occurred, msg.received)
		ev.Attributes["topic"] = msg.topic
		return ev
	}, s.env.Plant, s.env.Name, replay)
	if out.rebirth && !replay {
		s.requestRebirth(msg.topic)
	}
	if out.gap {
		s.m.seqGaps.Inc()
	}
	if merr != nil {
		s.fail(msg, merr, replay, finish)
		return
	}
	if out.ignored != "" && len(out.state) == 0 {
		finish(result{kind: resultIgnored, reason: out.ignored})
		return
	}
	kind := resultMapped
	if out.dup {
		s.m.duplicates.Inc()
		kind = resultDuplicate
	}
	s.commit(msg, out.events, out.state, kind, finish, nil)
}

// newEvent fills the envelope every event of this source has.
func (s *Source) newEvent(id, eventType, topic string, occurred, observed time.Time) *pb.Event {
	return &pb.Event{
		Id:            id,
		CorrelationId: id,
		Plant:         s.env.Plant,
		Source:        &pb.Source{Name: s.env.Name, Kind: "mqtt", Uri: "mqtt:" + topic},
		Type:          eventType,
		OccurredAt:    timestamppb.New(occurred),
		ObservedAt:    timestamppb.New(observed),
		SchemaVersion: 1,
		Attributes:    map[string]string{"topic": topic},
	}
}

// commit hands events (and source state) to the buffer; finish runs once
// they are committed or have failed for good. settle, if set, learns the
// commit's fate first.
func (s *Source) commit(msg inMsg, events []*pb.Event, state []buffer.StateWrite, kind string, finish func(result), settle func(bool)) {
	s.inflight.add()
	n := len(events)
	done := func(_, _ uint64, err error) {
		defer s.inflight.done()
		if settle != nil {
			settle(err == nil)
		}
		if err != nil {
			// Not acknowledged: the broker redelivers after a reconnect.
			s.m.errors.WithLabelValues("buffer").Inc()
			finish(result{err: err})
			return
		}
		if kind == resultMapped {
			s.m.mapped.Add(float64(n))
		}
		finish(result{kind: kind})
	}
	ctx := s.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if err := s.env.Sink.AppendWithState(ctx, events, state, done); err != nil {
		done(0, 0, err)
	}
}

// fail quarantines a message that cannot be decoded or mapped and forwards
// it to the hub as a source.error event; the message is acknowledged once
// both are durable, so it never blocks the subscription.
func (s *Source) fail(msg inMsg, merr *mapError, replay bool, finish func(result)) {
	reason := merr.Error()
	location := "topic " + msg.topic
	if merr.field != "" {
		location += ", field " + merr.field
	} else if merr.offset >= 0 {
		location += fmt.Sprintf(", byte offset %d", merr.offset)
	}
	if replay {
		finish(result{kind: resultFailed, reason: reason, location: location})
		return
	}
	s.m.quarantined.Inc()
	var qid string
	entry, evicted, err := s.q.put(msg.topic, msg.payload, msg.qos, reason, location, msg.received)
	if err != nil {
		// The hub still gets the raw payload in the source.error event.
		s.m.errors.WithLabelValues("quarantine").Inc()
		s.log.Error("mqtt quarantine write failed; forwarding the message to the hub only", "topic", msg.topic, "error", err)
	} else {
		qid = fmt.Sprint(entry.ID)
		if entry.Count == 1 {
			s.log.Warn("mqtt message quarantined", "topic", msg.topic, "reason", reason, "quarantine_id", qid)
		}
		if evicted > 0 {
			s.m.quarantineEvicted.Add(float64(evicted))
			s.log.Warn("mqtt quarantine full: oldest entries deleted", "deleted", evicted, "max_entries", s.cfg.QuarantineMaxEntries)
		}
	}
	// The id differs from any id the message would get once mapped, so a
	// replay after a fix is not taken for a duplicate of this report.
	id := uuid.NewSHA1(idNamespace, append([]byte("quarantine\x00"+msg.topic+"\x00"), msg.payload...)).String()
	ev := s.newEvent(id, "source.error", msg.topic, msg.received, msg.received)
	ev.Payload = &pb.Event_SourceError{SourceError: &pb.SourceError{
		Reason: reason, Location: location, Raw: msg.payload, QuarantineId: qid,
	}}
	if qid != "" {
		ev.Attributes["quarantine_id"] = qid
	}
	s.commit(msg, []*pb.Event{ev}, nil, resultQuarantined, finish, nil)
}

// requestRebirth asks the edge node of topic to publish its births again,
// at most once per rebirth_interval.
func (s *Source) requestRebirth(topic string) {
	if !s.cfg.Sparkplug.RequestRebirth {
		return
	}
	t, due := s.sp.rebirthDue(topic, time.Now(), s.cfg.Sparkplug.RebirthInterval)
	if !due {
		return
	}
	payload, err := rebirthPayload(time.Now())
	if err != nil {
		s.log.Error("sparkplug rebirth request not encoded", "error", err)
		return
	}
	s.m.rebirths.Inc()
	s.log.Info("sparkplug rebirth requested", "group", t.group, "edge_node", t.edge)
	s.goPublish(sparkplugNamespace+"/"+t.group+"/"+spNCMD+"/"+t.edge, 0, false, payload)
}

// goPublish publishes off the message handler's goroutine: paho's handler
// must not wait on its own client.
func (s *Source) goPublish(topic string, qos byte, retained bool, payload []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		tok := s.client.Publish(topic, qos, retained, payload)
		if !tok.WaitTimeout(s.cfg.ConnectTimeout) || tok.Error() != nil {
			s.m.errors.WithLabelValues("publish").Inc()
			s.log.Warn("mqtt publish failed", "topic", topic, "error", tok.Error())
		}
	}()
}

// Shutdown stops taking messages, waits (within ctx) for the commits in
// flight so their acknowledgements go out, then disconnects. Messages whose
// commit did not finish are not acknowledged; the broker redelivers them.
func (s *Source) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped || !s.started {
		s.stopped = true
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	s.accepting.Store(false)
	// Appends waiting for buffer space give up (unacknowledged); queued
	// ones are still committed and acknowledged below.
	s.cancel()

	var errs []error
	if err := s.inflight.wait(ctx); err != nil {
		errs = append(errs, fmt.Errorf("commits in flight: %w", err))
	}
	s.acks.drain()
	if s.cfg.Sparkplug.HostID != "" && s.client.IsConnectionOpen() {
		tok := s.client.Publish(s.stateTopic, 1, true, s.offlineState)
		tok.WaitTimeout(min(time.Second, untilDeadline(ctx)))
	}
	quiesce := uint(250)
	if d := untilDeadline(ctx); d < 250*time.Millisecond {
		quiesce = uint(max(d.Milliseconds(), 0))
	}
	s.client.Disconnect(quiesce)
	s.acks.stop()
	if err := waitCtx(ctx, &s.bg); err != nil {
		errs = append(errs, fmt.Errorf("background work: %w", err))
	} else if err := s.q.close(); err != nil {
		errs = append(errs, fmt.Errorf("close quarantine: %w", err))
	}
	s.setHealth(source.StateStopped, false, nil)
	s.m.connected.Set(0)
	s.log.Info("mqtt source stopped")
	return errors.Join(errs...)
}

// inflightCount counts appends in flight. Unlike a WaitGroup it may be
// incremented while someone waits (a message handler racing Shutdown).
type inflightCount struct {
	mu   sync.Mutex
	n    int
	zero chan struct{}
}

func (c *inflightCount) add() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *inflightCount) done() {
	c.mu.Lock()
	c.n--
	if c.n == 0 && c.zero != nil {
		close(c.zero)
		c.zero = nil
	}
	c.mu.Unlock()
}

func (c *inflightCount) wait(ctx context.Context) error {
	c.mu.Lock()
	if c.n == 0 {
		c.mu.Unlock()
		return nil
	}
	if c.zero == nil {
		c.zero = make(chan struct{})
	}
	ch := c.zero
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func untilDeadline(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), 0)
	}
	return time.Hour
}

func waitCtx(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Health implements source.Source.
func (s *Source) Health() source.Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.health
}

func (s *Source) setHealth(st source.State, connected bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped && st != source.StateStopped {
		return
	}
	s.health.State, s.health.Connected = st, connected
	if err != nil {
		s.health.LastError = err.Error()
	}
}

// acker acknowledges messages to the broker off the buffer's committer
// goroutine: paho's ack can wait on the network, the committer must not.
type acker struct {
	latency interface{ Observe(float64) }

	mu    sync.Mutex
	items []ackItem
	wake  chan struct{}
	quit  chan struct{}
	once  sync.Once
}

type ackItem struct {
	msg  paho.Message
	recv time.Time
}

func newAcker(latency interface{ Observe(float64) }) *acker {
	return &acker{latency: latency, wake: make(chan struct{}, 1), quit: make(chan struct{})}
}

func (a *acker) push(m paho.Message, recv time.Time) {
	a.mu.Lock()
	a.items = append(a.items, ackItem{m, recv})
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *acker) run() {
	for {
		select {
		case <-a.wake:
			a.drain()
		case <-a.quit:
			a.drain()
			return
		}
	}
}

// drain acknowledges what is queued; safe to call from any goroutine.
func (a *acker) drain() {
	a.mu.Lock()
	items := a.items
	a.items = nil
	a.mu.Unlock()
	for _, it := range items {
		it.msg.Ack()
		a.latency.Observe(time.Since(it.recv).Seconds())
	}
}

func (a *acker) stop() { a.once.Do(func() { close(a.quit) }) }
