package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Helpers the process tests share: the MES message ids they publish, a
// replayable seed, and what the in-process mochi broker knows of the
// agent's session.

// seedFromEnv returns the fixed seed of a randomized test, or the one in
// PLANTSYNC_E2E_SEED to replay another run.
func seedFromEnv(t *testing.T, fixed uint64) uint64 {
	t.Helper()
	seed := fixed
	if s := os.Getenv("PLANTSYNC_E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("PLANTSYNC_E2E_SEED=%q: want a whole number", s)
		}
		seed = v
	}
	t.Logf("seed %d (PLANTSYNC_E2E_SEED=%d replays this run)", seed, seed)
	return seed
}

// deliveryCounter counts the PUBLISH packets the broker writes to one
// client, by MES message id, redeliveries included, and the publishes it
// has finished routing to subscribers. It keeps a short trail per message
// of what the broker did with it, for failure messages.
type deliveryCounter struct {
	mqtt.HookBase
	clientID string
	routed   atomic.Int64
	mu       sync.Mutex
	byID     map[string]int
	trail    map[string][]string
	pids     map[*mqtt.Client]map[uint16]string // inflight packet id -> message id
	conns    map[*mqtt.Client]int               // session generation
}

func countDeliveries(t *testing.T, b *mqtt.Server, clientID string) *deliveryCounter {
	t.Helper()
	h := &deliveryCounter{clientID: clientID, byID: map[string]int{}, trail: map[string][]string{},
		pids: map[*mqtt.Client]map[uint16]string{}, conns: map[*mqtt.Client]int{}}
	if err := b.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *deliveryCounter) ID() string { return "e2e-delivery-counter" }

func (h *deliveryCounter) Provides(b byte) bool {
	switch b {
	case mqtt.OnPacketSent, mqtt.OnPublished, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped:
		return true
	}
	return false
}

func payloadID(pk packets.Packet) string {
	var m struct {
		MessageID string `json:"message_id"`
	}
	_ = json.Unmarshal(pk.Payload, &m)
	return m.MessageID
}

// note appends to a message's trail; h.mu is held.
func (h *deliveryCounter) note(cl *mqtt.Client, id, what string, pid uint16) {
	gen, ok := h.conns[cl]
	if !ok {
		gen = len(h.conns) + 1
		h.conns[cl] = gen
	}
	h.trail[id] = append(h.trail[id], fmt.Sprintf("%s@session%d/pid%d", what, gen, pid))
}

// OnQosPublish runs when the broker puts a message in the client's
// inflight store (and again for each resend).
func (h *deliveryCounter) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, resends int) {
	if cl.ID != h.clientID || pk.FixedHeader.Type != packets.Publish {
		return
	}
	id := payloadID(pk)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pids[cl] == nil {
		h.pids[cl] = map[uint16]string{}
	}
	h.pids[cl][pk.PacketID] = id
	h.note(cl, id, fmt.Sprintf("stored(resends=%d)", resends), pk.PacketID)
}

// OnQosComplete runs when the client acknowledges a packet id.
func (h *deliveryCounter) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if cl.ID != h.clientID {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.pids[cl][pk.PacketID]
	h.note(cl, id, "acked", pk.PacketID)
}

// OnQosDropped runs when the broker gives up on an inflight message.
func (h *deliveryCounter) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.ID != h.clientID {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	id := payloadID(pk)
	if id == "" {
		id = h.pids[cl][pk.PacketID]
	}
	h.note(cl, id, "dropped", pk.PacketID)
}

// trailOf is what the broker did with a message, in order.
func (h *deliveryCounter) trailOf(id string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.trail[id])
}

// OnPublished runs once the broker has handed a publish to every
// subscriber's session.
func (h *deliveryCounter) OnPublished(cl *mqtt.Client, _ packets.Packet) {
	if cl.ID != h.clientID {
		h.routed.Add(1)
	}
}

func (h *deliveryCounter) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if cl.ID != h.clientID || pk.FixedHeader.Type != packets.Publish {
		return
	}
	id := payloadID(pk)
	h.mu.Lock()
	h.byID[id]++
	h.note(cl, id, "written", pk.PacketID)
	h.mu.Unlock()
}

func (h *deliveryCounter) count(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byID[id]
}

// redeliveries is how many PUBLISH packets went beyond the first per id.
func (h *deliveryCounter) redeliveries() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.byID {
		n += c - 1
	}
	return n
}

// brokerInflight lists the message ids of the QoS 1 messages the broker
// holds for clientID that the client has not acknowledged.
func brokerInflight(b *mqtt.Server, clientID string) []string {
	cl, ok := b.Clients.Get(clientID)
	if !ok {
		return nil
	}
	var ids []string
	for _, pk := range cl.State.Inflight.GetAll(false) {
		var m struct {
			MessageID string `json:"message_id"`
		}
		_ = json.Unmarshal(pk.Payload, &m)
		ids = append(ids, m.MessageID)
	}
	slices.Sort(ids)
	return ids
}

// brokerSession is the broker's live client for clientID, nil if none.
func brokerSession(b *mqtt.Server, clientID string) *mqtt.Client {
	cl, ok := b.Clients.Get(clientID)
	if !ok || cl.Closed() {
		return nil
	}
	return cl
}

func msgID(i int) string { return fmt.Sprintf("m-%05d", i) }

// firstFew shortens a list for a message.
func firstFew[T any](s []T) []T {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

// gatedPublisher publishes n QoS 1 messages spread evenly over a span while
// a crash test kills and restarts the agent. Each publish holds the gate
// shared; restartAgent closes it only while the agent takes its persistent
// session over: mochi v2.7.9 loses a message routed to a persistent session
// while a reconnecting client takes that session over
// (inheritClientSession clones the inflight messages, then clears the old
// client's, which stays registered until the new one is added). Messages
// still flow while the agent is being killed and while it is down: the
// broker queues them for the session.
type gatedPublisher struct {
	gate      sync.RWMutex
	published atomic.Int64
	done      chan error
}

func startGatedPublisher(t *testing.T, broker, topic string, n int, span time.Duration, payload func(i int) []byte) *gatedPublisher {
	t.Helper()
	g := &gatedPublisher{done: make(chan error, 1)}
	pub := publisher(t, broker)
	go func() {
		start := time.Now()
		for i := range n {
			if d := time.Until(start.Add(span * time.Duration(i) / time.Duration(n))); d > 0 {
				time.Sleep(d)
			}
			g.gate.RLock()
			tok := pub.Publish(topic, 1, false, payload(i))
			ok := tok.WaitTimeout(10*time.Second) && tok.Error() == nil
			if ok {
				g.published.Add(1)
			}
			g.gate.RUnlock()
			if !ok {
				g.done <- fmt.Errorf("publish %d: %v", i, tok.Error())
				return
			}
		}
		g.done <- nil
	}()
	return g
}

// restartAgent starts the agent with the gate closed: once the broker has
// routed every acknowledged publish (it acks before routing), until the
// agent holds its MQTT session.
func (g *gatedPublisher) restartAgent(t *testing.T, mb *mqtt.Server, deliveries *deliveryCounter, ag *agentProc) {
	t.Helper()
	g.gate.Lock()
	defer g.gate.Unlock()
	waitFor(t, nil, 10*time.Second, "broker routed every acknowledged publish", func() error {
		if r, p := deliveries.routed.Load(), g.published.Load(); r < p {
			return fmt.Errorf("routed %d of %d", r, p)
		}
		return nil
	})
	old := brokerSession(mb, ag.ClientID)
	ag.Start()
	waitFor(t, ag.proc, 10*time.Second, "agent took its MQTT session over", func() error {
		if cl := brokerSession(mb, ag.ClientID); cl == nil || cl == old {
			return errors.New("no new session yet")
		}
		return nil
	})
}
