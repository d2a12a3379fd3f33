package plantsim_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log"
	"math/big"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/sim/plantsim"
)

func TestMain(m *testing.M) {
	// gopcua's server prints its node-set import and listen address with
	// the standard logger; the simulator cannot route those lines.
	log.SetOutput(io.Discard)
	goleak.VerifyTestMain(m)
}

const testTimeout = 10 * time.Second

// startSim runs a simulator on loopback port 0 with fast machines and no
// periodic MES messages unless mutate says otherwise.
func startSim(t *testing.T, mutate func(*plantsim.Config)) *plantsim.Sim {
	t.Helper()
	cfg := plantsim.NewDefaultConfig()
	cfg.MachineInterval = 20 * time.Millisecond
	cfg.MESInterval = 0
	cfg.Seed = 42
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := plantsim.New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s
}

func connectOPCUA(t *testing.T, endpoint string, opts ...opcua.Option) *opcua.Client {
	t.Helper()
	c, err := opcua.NewClient(endpoint, append([]opcua.Option{opcua.AutoReconnect(false)}, opts...)...)
	if err != nil {
		t.Fatalf("opcua.NewClient: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("Connect %s: %v", endpoint, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func readValue(t *testing.T, c *opcua.Client, nodeID string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := c.Read(ctx, &ua.ReadRequest{
		NodesToRead:        []*ua.ReadValueID{{NodeID: ua.MustParseNodeID(nodeID), AttributeID: ua.AttributeIDValue}},
		TimestampsToReturn: ua.TimestampsToReturnBoth,
	})
	if err != nil {
		t.Fatalf("Read %s: %v", nodeID, err)
	}
	if len(resp.Results) != 1 || resp.Results[0].Status != ua.StatusOK {
		t.Fatalf("Read %s: results %+v", nodeID, resp.Results)
	}
	return resp.Results[0].Value.Value()
}

// waitGoodCountRise reads L1.M1.GoodCount until it exceeds its first value.
func waitGoodCountRise(t *testing.T, c *opcua.Client) {
	t.Helper()
	node := plantsim.NodeID("L1", 1, plantsim.VarGoodCount)
	first, ok := readValue(t, c, node).(uint32)
	if !ok {
		t.Fatalf("%s is %T, want uint32", node, readValue(t, c, node))
	}
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		if v := readValue(t, c, node).(uint32); v > first {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s stayed at %d", node, first)
}

// TestOPCUA shares one simulator between its subtests: building a gopcua
// server takes about a second under the race detector.
func TestOPCUA(t *testing.T) {
	s := startSim(t, func(c *plantsim.Config) { c.Lines = []string{"L1", "L2"}; c.MachinesPerLine = 2 })
	t.Run("read good count increases", func(t *testing.T) { testOPCUARead(t, s) })
	t.Run("unknown node", func(t *testing.T) { testOPCUAUnknownNode(t, s) })
	t.Run("subscription gets data change", func(t *testing.T) { testOPCUASubscription(t, s) })
	t.Run("secure read", func(t *testing.T) { testOPCUASecureRead(t, s) })
	t.Run("browse", func(t *testing.T) { testOPCUABrowse(t, s) })
}

func testOPCUARead(t *testing.T, s *plantsim.Sim) {
	if !strings.HasPrefix(s.OPCUAEndpoint(), "opc.tcp://127.0.0.1:") || strings.HasSuffix(s.OPCUAEndpoint(), ":0") {
		t.Fatalf("OPCUAEndpoint = %q, want opc.tcp://127.0.0.1:<port>", s.OPCUAEndpoint())
	}
	c := connectOPCUA(t, s.OPCUAEndpoint())
	waitGoodCountRise(t, c)

	state, ok := readValue(t, c, plantsim.NodeID("L1", 1, plantsim.VarState)).(string)
	if !ok || (state != plantsim.StateRunning && state != plantsim.StateIdle && state != plantsim.StateDown) {
		t.Errorf("State = %#v, want Running, Idle or Down", state)
	}
	// Sim.Machine shows what clients read; counts only ever grow.
	read := readValue(t, c, plantsim.NodeID("L1", 1, plantsim.VarGoodCount)).(uint32)
	if mv, ok := s.Machine("L1", 1); !ok || mv.GoodCount < read {
		t.Errorf("Machine(L1, 1) = %+v, %v; want GoodCount >= %d", mv, ok, read)
	}
	if _, ok := s.Machine("L1", 99); ok {
		t.Error("Machine(L1, 99) exists")
	}
	temp, ok := readValue(t, c, "ns=2;s=L2.M2.Temperature").(float64)
	if !ok || temp < 0 || temp > 100 {
		t.Errorf("Temperature = %#v, want a float64 in 0..100", temp)
	}
}

func testOPCUAUnknownNode(t *testing.T, s *plantsim.Sim) {
	c := connectOPCUA(t, s.OPCUAEndpoint())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := c.Read(ctx, &ua.ReadRequest{
		NodesToRead: []*ua.ReadValueID{{NodeID: ua.MustParseNodeID("ns=2;s=L1.M9.State"), AttributeID: ua.AttributeIDValue}},
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if got := resp.Results[0].Status; got != ua.StatusBadNodeIDUnknown {
		t.Errorf("status = %v, want %v", got, ua.StatusBadNodeIDUnknown)
	}
}

func testOPCUASubscription(t *testing.T, s *plantsim.Sim) {
	c := connectOPCUA(t, s.OPCUAEndpoint())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	notify := make(chan *opcua.PublishNotificationData, 16)
	sub, err := c.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: 50 * time.Millisecond}, notify)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), testTimeout)
		defer ccancel()
		_ = sub.Cancel(cctx)
	}()
	req := opcua.NewMonitoredItemCreateRequestWithDefaults(
		ua.MustParseNodeID(plantsim.NodeID("L1", 1, plantsim.VarGoodCount)), ua.AttributeIDValue, 7)
	res, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, req)
	if err != nil || res.Results[0].StatusCode != ua.StatusOK {
		t.Fatalf("Monitor: %v %+v", err, res)
	}

	// The first notification is the initial value; a later, larger one is
	// a change the simulator announced.
	var values []uint32
	for len(values) < 2 || values[len(values)-1] <= values[0] {
		select {
		case n := <-notify:
			if n.Error != nil {
				t.Fatalf("notification error: %v", n.Error)
			}
			dc, ok := n.Value.(*ua.DataChangeNotification)
			if !ok {
				continue
			}
			for _, item := range dc.MonitoredItems {
				if item.ClientHandle != 7 {
					t.Fatalf("client handle = %d, want 7", item.ClientHandle)
				}
				v, ok := item.Value.Value.Value().(uint32)
				if !ok {
					t.Fatalf("value is %T, want uint32", item.Value.Value.Value())
				}
				values = append(values, v)
			}
		case <-ctx.Done():
			t.Fatalf("no data change after %v; values %v", testTimeout, values)
		}
	}
}

func testOPCUASecureRead(t *testing.T, s *plantsim.Sim) {
	cert, key := clientIdentity(t)

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	eps, err := opcua.GetEndpoints(ctx, s.OPCUAEndpoint())
	if err != nil {
		t.Fatalf("GetEndpoints: %v", err)
	}

	for _, mode := range []ua.MessageSecurityMode{ua.MessageSecurityModeSign, ua.MessageSecurityModeSignAndEncrypt} {
		t.Run(mode.String(), func(t *testing.T) {
			ep, err := opcua.SelectEndpoint(eps, ua.SecurityPolicyURIBasic256Sha256, mode)
			if err != nil {
				t.Fatalf("SelectEndpoint: %v", err)
			}
			if !bytes.Equal(ep.ServerCertificate, s.ServerCertificate()) {
				t.Errorf("endpoint certificate differs from ServerCertificate()")
			}
			// The client's certificate is one the simulator has never seen.
			c := connectOPCUA(t, s.OPCUAEndpoint(),
				opcua.SecurityFromEndpoint(ep, ua.UserTokenTypeAnonymous),
				opcua.Certificate(cert),
				opcua.PrivateKey(key),
				opcua.ApplicationURI("urn:plantsync:test:client"),
			)
			waitGoodCountRise(t, c)
		})
	}
}

func testOPCUABrowse(t *testing.T, s *plantsim.Sim) {
	c := connectOPCUA(t, s.OPCUAEndpoint())

	children := func(nodeID *ua.NodeID) map[string]*ua.ReferenceDescription {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		resp, err := c.Browse(ctx, &ua.BrowseRequest{
			View: &ua.ViewDescription{ViewID: ua.NewTwoByteNodeID(0)},
			NodesToBrowse: []*ua.BrowseDescription{{
				NodeID:          nodeID,
				BrowseDirection: ua.BrowseDirectionForward,
				ReferenceTypeID: ua.NewNumericNodeID(0, id.HierarchicalReferences),
				IncludeSubtypes: true,
				ResultMask:      uint32(ua.BrowseResultMaskAll),
			}},
		})
		if err != nil {
			t.Fatalf("Browse %s: %v", nodeID, err)
		}
		if len(resp.Results) != 1 || resp.Results[0].StatusCode != ua.StatusOK {
			t.Fatalf("Browse %s: %+v", nodeID, resp.Results)
		}
		out := map[string]*ua.ReferenceDescription{}
		for _, r := range resp.Results[0].References {
			out[r.BrowseName.Name] = r
		}
		return out
	}

	objects := children(ua.NewNumericNodeID(0, id.ObjectsFolder))
	for _, line := range []string{"L1", "L2"} {
		ref, ok := objects[line]
		if !ok {
			t.Fatalf("Objects has no %s; children %v", line, keys(objects))
		}
		if got, want := ref.NodeID.NodeID.String(), "ns=2;s="+line; got != want {
			t.Errorf("%s node id = %s, want %s", line, got, want)
		}
	}
	if got := objects["L2"].DisplayName.Text; got != "Line2" {
		t.Errorf("L2 display name = %q, want Line2", got)
	}
	machines := children(objects["L2"].NodeID.NodeID)
	if len(machines) != 2 || machines["M2"] == nil {
		t.Fatalf("L2 children = %v, want M1 M2", keys(machines))
	}
	if got := machines["M2"].DisplayName.Text; got != "Press2" {
		t.Errorf("M2 display name = %q, want Press2", got)
	}
	vars := children(machines["M2"].NodeID.NodeID)
	for _, v := range []string{plantsim.VarState, plantsim.VarGoodCount, plantsim.VarTemperature} {
		ref, ok := vars[v]
		if !ok {
			t.Fatalf("L2/M2 has no %s; children %v", v, keys(vars))
		}
		if got, want := ref.NodeID.NodeID.String(), plantsim.NodeID("L2", 2, v); got != want {
			t.Errorf("%s node id = %s, want %s", v, got, want)
		}
		if ref.NodeClass != ua.NodeClassVariable {
			t.Errorf("%s node class = %v, want Variable", v, ref.NodeClass)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

type received struct {
	topic   string
	payload []byte
}

// subscribeMQTT connects a paho client and delivers every message on
// mes/# to the returned channel.
func subscribeMQTT(t *testing.T, addr string) <-chan received {
	t.Helper()
	msgs := make(chan received, 256)
	opts := paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID("plantsim-test-" + strings.ReplaceAll(t.Name(), "/", "-")).
		SetAutoReconnect(false).
		SetConnectTimeout(testTimeout)
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("mqtt connect %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(250) })
	tok := c.Subscribe("mes/#", 1, func(_ paho.Client, m paho.Message) {
		select {
		case msgs <- received{topic: m.Topic(), payload: append([]byte(nil), m.Payload()...)}:
		default: // the test has what it needs
		}
	})
	if !tok.WaitTimeout(testTimeout) || tok.Error() != nil {
		t.Fatalf("mqtt subscribe: %v", tok.Error())
	}
	return msgs
}

var (
	decimalRE   = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)
	messageIDRE = regexp.MustCompile(`^DE-01-(completion|consumption|shortage)-[0-9a-f]{8}-[0-9]+$`)
)

// checkMessage decodes a payload strictly and checks every field.
func checkMessage(t *testing.T, r received) plantsim.Message {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(r.payload))
	dec.DisallowUnknownFields()
	var m plantsim.Message
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("payload %s: %v", r.payload, err)
	}
	var raw map[string]any
	if err := json.Unmarshal(r.payload, &raw); err != nil {
		t.Fatalf("payload %s: %v", r.payload, err)
	}
	if _, isString := raw["quantity"].(string); !isString {
		t.Errorf("quantity is %T, want a JSON string", raw["quantity"])
	}

	parts := strings.Split(r.topic, "/")
	if len(parts) != 4 || parts[0] != "mes" || parts[1] != "DE-01" {
		t.Fatalf("topic %q, want mes/DE-01/<line>/<kind>", r.topic)
	}
	line, kind := parts[2], parts[3]
	if !messageIDRE.MatchString(m.MessageID) || !strings.HasPrefix(m.MessageID, "DE-01-"+kind+"-") {
		t.Errorf("message_id %q does not match kind %q", m.MessageID, kind)
	}
	if !strings.HasPrefix(m.WorkCenter, line+"-M") {
		t.Errorf("work_center %q is not on line %q", m.WorkCenter, line)
	}
	if !strings.HasPrefix(m.Order, "PO-") || m.Item == "" || m.Unit == "" {
		t.Errorf("order/item/unit missing: %+v", m)
	}
	if !decimalRE.MatchString(m.Quantity) {
		t.Errorf("quantity %q is not a decimal string", m.Quantity)
	}
	at, err := time.Parse(time.RFC3339Nano, m.OccurredAt)
	if err != nil || !strings.HasSuffix(m.OccurredAt, "Z") {
		t.Errorf("occurred_at %q is not RFC 3339 UTC: %v", m.OccurredAt, err)
	}
	if since := time.Since(at); since < 0 || since > time.Minute {
		t.Errorf("occurred_at %s is not recent", m.OccurredAt)
	}

	switch kind {
	case plantsim.KindCompletion:
		if m.Lot != "" || m.RequiredBy != "" {
			t.Errorf("completion has lot or required_by: %+v", m)
		}
	case plantsim.KindConsumption:
		if !strings.HasPrefix(m.Lot, "LOT-") || m.RequiredBy != "" {
			t.Errorf("consumption lot/required_by wrong: %+v", m)
		}
	case plantsim.KindShortage:
		if _, err := time.Parse(time.DateOnly, m.RequiredBy); err != nil || m.Lot != "" {
			t.Errorf("shortage required_by/lot wrong: %+v (%v)", m, err)
		}
	default:
		t.Errorf("unknown kind %q in topic %q", kind, r.topic)
	}
	return m
}

func TestMQTTReceivesMESMessages(t *testing.T) {
	s := startSim(t, func(c *plantsim.Config) {
		c.MESInterval = 10 * time.Millisecond
		c.Lines = []string{"L1", "L2"}
	})
	if strings.HasSuffix(s.MQTTAddr(), ":0") || !strings.HasPrefix(s.MQTTAddr(), "127.0.0.1:") {
		t.Fatalf("MQTTAddr = %q, want 127.0.0.1:<port>", s.MQTTAddr())
	}
	msgs := subscribeMQTT(t, s.MQTTAddr())

	// Periodic messages cycle through the kinds; wait for one of each.
	seenKinds := map[string]bool{}
	seenIDs := map[string]bool{}
	timeout := time.After(testTimeout)
	for len(seenKinds) < len(plantsim.Kinds()) {
		select {
		case r := <-msgs:
			m := checkMessage(t, r)
			if seenIDs[m.MessageID] {
				t.Fatalf("message_id %s arrived twice", m.MessageID)
			}
			seenIDs[m.MessageID] = true
			seenKinds[r.topic[strings.LastIndex(r.topic, "/")+1:]] = true
		case <-timeout:
			t.Fatalf("saw kinds %v after %v", seenKinds, testTimeout)
		}
	}
	// A subscriber can see a message before Publish has returned and
	// counted it, so the count may trail briefly.
	deadline := time.Now().Add(testTimeout)
	for s.Published() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.Published(); got < 3 {
		t.Errorf("Published() = %d after three messages arrived", got)
	}
}

func TestPublishReturnsIDThatArrives(t *testing.T) {
	s := startSim(t, nil)
	msgs := subscribeMQTT(t, s.MQTTAddr())
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	for _, kind := range plantsim.Kinds() {
		id, err := s.Publish(ctx, kind)
		if err != nil {
			t.Fatalf("Publish(%s): %v", kind, err)
		}
		if !strings.Contains(id, "-"+kind+"-"+s.RunID()+"-") {
			t.Errorf("id %q lacks kind %s and run id %s", id, kind, s.RunID())
		}
		select {
		case r := <-msgs:
			m := checkMessage(t, r)
			if m.MessageID != id {
				t.Errorf("arrived %s, want %s", m.MessageID, id)
			}
			if !strings.HasSuffix(r.topic, "/"+kind) {
				t.Errorf("topic %s, want kind %s", r.topic, kind)
			}
		case <-ctx.Done():
			t.Fatalf("message %s did not arrive", id)
		}
	}
	if got := s.Published(); got != 3 {
		t.Errorf("Published() = %d, want 3", got)
	}

	if _, err := s.Publish(ctx, "scrap"); !errors.Is(err, plantsim.ErrUnknownKind) {
		t.Errorf("Publish(scrap) = %v, want ErrUnknownKind", err)
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := s.Publish(done, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish with a cancelled context = %v, want context.Canceled", err)
	}
	if got := s.Published(); got != 3 {
		t.Errorf("Published() = %d after failed publishes, want 3", got)
	}
}

func TestLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	t.Run("shutdown without start", func(t *testing.T) {
		s, err := plantsim.New(plantsim.NewDefaultConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Publish(ctx, ""); !errors.Is(err, plantsim.ErrNotStarted) {
			t.Errorf("Publish before Start = %v, want ErrNotStarted", err)
		}
		if s.OPCUAEndpoint() != "" || s.MQTTAddr() != "" {
			t.Errorf("addresses before Start: %q %q", s.OPCUAEndpoint(), s.MQTTAddr())
		}
		for i := range 2 {
			if err := s.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown #%d: %v", i+1, err)
			}
		}
		if err := s.Start(ctx); !errors.Is(err, plantsim.ErrClosed) {
			t.Errorf("Start after Shutdown = %v, want ErrClosed", err)
		}
	})

	t.Run("shutdown twice with clients connected", func(t *testing.T) {
		s, err := plantsim.New(plantsim.NewDefaultConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); !errors.Is(err, plantsim.ErrAlreadyStarted) {
			t.Errorf("second Start = %v, want ErrAlreadyStarted", err)
		}
		// Clients that are still connected, one with a live subscription,
		// must neither slow Shutdown down nor leave goroutines behind.
		c := connectOPCUA(t, s.OPCUAEndpoint())
		notify := make(chan *opcua.PublishNotificationData, 16)
		if _, err := c.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: 50 * time.Millisecond}, notify); err != nil {
			t.Fatalf("Subscribe: %v", err)
		}
		subscribeMQTT(t, s.MQTTAddr())

		// gopcua on its own takes 10 s to give up on a connected client.
		sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
		defer scancel()
		for i := range 2 {
			if err := s.Shutdown(sctx); err != nil {
				t.Errorf("Shutdown #%d: %v", i+1, err)
			}
		}
		if _, err := s.Publish(ctx, ""); !errors.Is(err, plantsim.ErrClosed) {
			t.Errorf("Publish after Shutdown = %v, want ErrClosed", err)
		}
	})

	t.Run("start honours a done context", func(t *testing.T) {
		s, err := plantsim.New(plantsim.NewDefaultConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		done, cancelDone := context.WithCancel(context.Background())
		cancelDone()
		if err := s.Start(done); !errors.Is(err, context.Canceled) {
			t.Errorf("Start = %v, want context.Canceled", err)
		}
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := plantsim.NewDefaultConfig()
	cfg.Lines = nil
	if _, err := plantsim.New(cfg, nil); !errors.Is(err, plantsim.ErrInvalidConfig) {
		t.Errorf("New = %v, want ErrInvalidConfig", err)
	}
}

func TestBusyPortFails(t *testing.T) {
	s := startSim(t, nil)
	cfg := plantsim.NewDefaultConfig()
	cfg.MQTTListen = s.MQTTAddr()
	other, err := plantsim.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := other.Start(ctx); !errors.Is(err, plantsim.ErrMQTT) {
		t.Errorf("Start on a busy MQTT port = %v, want ErrMQTT", err)
	}
	cfg = plantsim.NewDefaultConfig()
	cfg.OPCUAListen = strings.TrimPrefix(s.OPCUAEndpoint(), "opc.tcp://")
	other, err = plantsim.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(ctx); !errors.Is(err, plantsim.ErrOPCUA) {
		t.Errorf("Start on a busy OPC UA port = %v, want ErrOPCUA", err)
	}
	if err := other.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown after failed Start: %v", err)
	}
}

// clientIdentity makes the kind of self-signed certificate an OPC UA client
// generates for itself on first start.
func clientIdentity(t *testing.T) ([]byte, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	uri, _ := url.Parse("urn:plantsync:test:client")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "plantsim test client"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment |
			x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}
