package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/agent/source"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Factory registers the type with the agent.
var Factory = source.Factory{
	Type:             "mqtt",
	NewDefaultConfig: func() source.Config { return NewDefaultConfig() },
	New: func(cfg source.Config, env source.Env) (source.Source, error) {
		return New(cfg.(*Config), env)
	},
}

// Source is one MQTT connection with its subscriptions.
type Source struct {
	cfg    *Config
	env    source.Env
	log    *slog.Logger
	m      *metrics
	client paho.Client
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	health  source.Health
	stopped bool
}

// New builds the source; Start connects.
func New(cfg *Config, env source.Env) (*Source, error) {
	s := &Source{cfg: cfg, env: env, log: env.Logger, m: newMetrics(env.Registerer),
		health: source.Health{State: source.StateStarting}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Start connects in the background; paho reconnects and resubscribes by
// itself with backoff.
func (s *Source) Start(ctx context.Context) error {
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	opts := paho.NewClientOptions()
	for _, b := range s.cfg.Brokers {
		opts.AddBroker(b)
	}
	opts.SetClientID(s.cfg.ClientID).
		SetCleanSession(s.cfg.CleanSession).
		SetKeepAlive(s.cfg.KeepAlive).
		SetConnectTimeout(s.cfg.ConnectTimeout).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		SetOrderMatters(true).
		// Ack after durable: the broker keeps a message until its event
		// is committed in the buffer.
		SetAutoAckDisabled(true).
		SetOnConnectHandler(s.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.setHealth(source.StateDegraded, false, err)
			s.m.connected.Set(0)
			s.log.Warn("mqtt connection lost; reconnecting", "error", err)
		})
	s.client = paho.NewClient(opts)
	s.client.Connect() // with ConnectRetry it keeps trying in the background
	s.log.Info("mqtt source started", "brokers", s.cfg.Brokers, "client_id", s.cfg.ClientID)
	return nil
}

func (s *Source) onConnect(c paho.Client) {
	// paho runs this handler on its own goroutine, so waiting is fine. The
	// source reports running only once every subscription is in place.
	s.log.Info("mqtt connected", "brokers", s.cfg.Brokers)
	s.m.connected.Set(1)
	for i := range s.cfg.Subscriptions {
		sub := s.cfg.Subscriptions[i]
		tok := c.Subscribe(sub.Topic, sub.QoS, func(_ paho.Client, msg paho.Message) { s.handle(sub, msg) })
		if !tok.WaitTimeout(s.cfg.ConnectTimeout) || tok.Error() != nil {
			err := fmt.Errorf("subscribe %q: %v", sub.Topic, tok.Error())
			s.setHealth(source.StateDegraded, true, err)
			s.log.Error("mqtt subscribe failed", "topic", sub.Topic, "error", tok.Error())
			return
		}
	}
	s.setHealth(source.StateRunning, true, nil)
}

func (s *Source) handle(sub Subscription, msg paho.Message) {
	s.m.received.Inc()
	ev := s.mapMessage(sub, msg)
	err := s.env.Sink.AppendAsync(s.ctx, []*pb.Event{ev}, func(_, _ uint64, err error) {
		if err != nil {
			// Not acked: the broker redelivers after a reconnect.
			s.m.errors.WithLabelValues("buffer").Inc()
			return
		}
		msg.Ack()
	})
	if err != nil {
		s.m.errors.WithLabelValues("buffer").Inc()
	}
}

// mapMessage never fails: what cannot be mapped becomes a source.error
// event carrying the raw payload, so it shows up at the hub.
func (s *Source) mapMessage(sub Subscription, msg paho.Message) *pb.Event {
	now := timestamppb.Now()
	ev := &pb.Event{
		Plant:         s.env.Plant,
		Source:        &pb.Source{Name: s.env.Name, Kind: "mqtt", Uri: "mqtt:" + msg.Topic()},
		Type:          sub.EventType,
		ObservedAt:    now,
		SchemaVersion: 1,
		Attributes:    map[string]string{"topic": msg.Topic()},
	}
	fail := func(reason string, id string) *pb.Event {
		s.m.errors.WithLabelValues("mapping").Inc()
		if id == "" {
			id = uuid.NewSHA1(idNamespace, append([]byte(msg.Topic()+"\x00"), msg.Payload()...)).String()
		}
		ev.Id = id
		ev.Type = "source.error"
		ev.OccurredAt = now
		ev.Payload = &pb.Event_SourceError{SourceError: &pb.SourceError{
			Reason: reason, Location: "topic " + msg.Topic(), Raw: msg.Payload(),
		}}
		return ev
	}
	dec := json.NewDecoder(bytes.NewReader(msg.Payload()))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return fail(decodeError(err), "")
	}
	msgID := str(doc, sub.IDField)
	if msgID == "" {
		return fail(fmt.Sprintf("field %s: missing message id", sub.IDField), "")
	}
	ev.Id = EventID(s.env.Plant, s.env.Name, msgID)
	ev.CorrelationId = ev.Id
	ev.OccurredAt = now
	if oa := str(doc, "occurred_at"); oa != "" {
		t, err := parseTime(oa)
		if err != nil {
			return fail(fmt.Sprintf("field occurred_at: %v", err), ev.Id)
		}
		ev.OccurredAt = timestamppb.New(t)
	}
	ev.Attributes["message_id"] = msgID
	if err := mappers[sub.EventType](doc, ev); err != nil {
		return fail(err.Error(), ev.Id)
	}
	s.m.mapped.Inc()
	return ev
}

// Shutdown stops the source. In-flight messages that were not committed are
// not acked; the broker redelivers them next time.
func (s *Source) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped || s.client == nil {
		s.stopped = true
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	s.mu.Unlock()
	quiesce := uint(250)
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < 250*time.Millisecond {
			quiesce = uint(max(d.Milliseconds(), 0))
		}
	}
	s.client.Disconnect(quiesce)
	s.cancel()
	s.setHealth(source.StateStopped, false, nil)
	s.m.connected.Set(0)
	s.log.Info("mqtt source stopped")
	return nil
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
	s.health.State, s.health.Connected = st, connected
	if err != nil {
		s.health.LastError = err.Error()
	}
}

type metrics struct {
	connected prometheus.Gauge
	received  prometheus.Counter
	mapped    prometheus.Counter
	errors    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "plantsync_agent_mqtt_connected", Help: "1 while connected to a broker."}),
		received:  prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_mqtt_received_total", Help: "Messages received."}),
		mapped:    prometheus.NewCounter(prometheus.CounterOpts{Name: "plantsync_agent_mqtt_mapped_total", Help: "Messages mapped to canonical events."}),
		errors:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "plantsync_agent_mqtt_errors_total", Help: "Errors by kind (mapping, buffer)."}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.received, m.mapped, m.errors)
	}
	return m
}
