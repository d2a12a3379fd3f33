package plantsim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua/ua"
	mqtt "github.com/mochi-mqtt/server/v2"
)

// Lifecycle errors.
var (
	// ErrNotStarted is returned by Publish before Start.
	ErrNotStarted = errors.New("plantsim not started")
	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("plantsim already started")
	// ErrClosed is returned by Start and Publish after Shutdown.
	ErrClosed = errors.New("plantsim shut down")
)

type lifecycle int

const (
	lifecycleNew lifecycle = iota
	lifecycleRunning
	lifecycleStopped
)

// Sim is one simulated plant: an OPC UA server with machine values and an
// MQTT broker carrying MES messages. Create it with New, then Start; it is
// safe for concurrent use.
type Sim struct {
	cfg    Config
	base   *slog.Logger // injected logger; each part adds its component
	logger *slog.Logger
	ident  serverIdentity
	plant  *plant
	gen    *generator
	runID  string

	published atomic.Uint64

	// mu guards the lifecycle. Publish holds it shared while it uses the
	// broker, so Shutdown never closes the broker under a publish.
	mu       sync.RWMutex
	state    lifecycle
	ua       *uaServer
	broker   *mqtt.Server
	mqttAddr string
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	pubMu sync.Mutex // keeps message ids and broker order the same

	done    chan struct{} // closed when shutdown has finished
	stopErr error         // written before done is closed
}

// New validates cfg and prepares the plant. It generates the OPC UA server's
// key pair but opens no sockets; Start does. A nil logger discards logs.
func New(cfg Config, logger *slog.Logger) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Lines = append([]string(nil), cfg.Lines...)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	base := logger.With("plant", cfg.Plant)

	ident, err := newServerIdentity(cfg.Plant)
	if err != nil {
		return nil, err
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("plantsim: run id: %w", err)
	}
	// The run id keeps message ids unique across restarts with the same
	// seed, which an agent's duplicate filter relies on.
	runID := hex.EncodeToString(b[:])

	return &Sim{
		cfg:    cfg,
		base:   base,
		logger: base.With("component", "plantsim"),
		ident:  ident,
		plant:  newPlant(cfg, time.Now()),
		gen:    newGenerator(cfg, runID),
		runID:  runID,
		done:   make(chan struct{}),
	}, nil
}

// Start binds the OPC UA server and the MQTT broker and starts the machine
// and MES goroutines. It returns once both listen; ctx bounds only that.
func (s *Sim) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("plantsim: start: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case lifecycleRunning:
		return ErrAlreadyStarted
	case lifecycleStopped:
		return ErrClosed
	}

	broker, mqttAddr, err := startMQTT(s.cfg, s.base)
	if err != nil {
		return err
	}
	uas, err := startOPCUA(s.cfg, s.ident, s.plant, s.base)
	if err != nil {
		_ = broker.Close()
		return err
	}

	runCtx, cancel := context.WithCancel(context.Background())
	s.ua, s.broker, s.mqttAddr, s.cancel = uas, broker, dialable(mqttAddr), cancel
	s.state = lifecycleRunning

	s.wg.Add(1)
	go s.runMachines(runCtx)
	if s.cfg.MESInterval > 0 {
		s.wg.Add(1)
		go s.runMES(runCtx)
	}

	s.logger.Info("plant simulator started",
		"opcua_endpoint", s.ua.endpoint,
		"mqtt_addr", s.mqttAddr,
		"lines", s.cfg.Lines,
		"machines_per_line", s.cfg.MachinesPerLine,
		"mes_interval", s.cfg.MESInterval,
		"machine_interval", s.cfg.MachineInterval,
		"seed", s.cfg.Seed,
		"run_id", s.runID)
	return nil
}

// Shutdown stops the goroutines, the OPC UA server and the broker. It is
// safe to call more than once and without Start. If ctx ends first it
// returns ctx's error while the rest of the shutdown finishes in the
// background; gopcua waits up to 10 s for clients that stay connected.
func (s *Sim) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	switch s.state {
	case lifecycleNew:
		s.state = lifecycleStopped
		close(s.done)
	case lifecycleRunning:
		s.state = lifecycleStopped
		go s.stop()
	}
	s.mu.Unlock()

	select {
	case <-s.done:
		return s.stopErr
	case <-ctx.Done():
		return fmt.Errorf("plantsim: shutdown: %w", ctx.Err())
	}
}

func (s *Sim) stop() {
	defer close(s.done)
	s.cancel()
	s.wg.Wait()

	var errs []error
	if err := s.broker.Close(); err != nil {
		errs = append(errs, fmt.Errorf("%w: close: %w", ErrMQTT, err))
	}
	if err := s.ua.shutdown(); err != nil {
		errs = append(errs, err)
	}
	s.stopErr = errors.Join(errs...)
	s.logger.Info("plant simulator stopped", "published", s.published.Load())
}

// OPCUAEndpoint is the URL clients dial, e.g. opc.tcp://127.0.0.1:4840. It
// is empty before Start.
func (s *Sim) OPCUAEndpoint() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ua == nil {
		return ""
	}
	return s.ua.endpoint
}

// MQTTAddr is the host:port of the broker, e.g. 127.0.0.1:1883. It is empty
// before Start.
func (s *Sim) MQTTAddr() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mqttAddr
}

// ServerCertificate returns the OPC UA server's self-signed certificate
// (DER), for clients that pin it.
func (s *Sim) ServerCertificate() []byte {
	return append([]byte(nil), s.ident.cert...)
}

// RunID is the random part of this run's message ids.
func (s *Sim) RunID() string { return s.runID }

// Published counts the MES messages handed to the broker so far.
func (s *Sim) Published() uint64 { return s.published.Load() }

// MachineValues is a snapshot of one machine's OPC UA variables.
type MachineValues struct {
	State       string
	GoodCount   uint32
	Temperature float64
}

// Machine returns the current values of machine index (1-based) on line,
// as an OPC UA client would read them.
func (s *Sim) Machine(line string, index int) (MachineValues, bool) {
	for _, m := range s.plant.machines {
		if m.line == line && m.index == index {
			return MachineValues{State: m.stateName(), GoodCount: m.count(), Temperature: m.temp()}, true
		}
	}
	return MachineValues{}, false
}

// Publish publishes one MES message of kind now and returns its message id.
// An empty kind takes the next kind of the cycle.
func (s *Sim) Publish(ctx context.Context, kind string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("plantsim: publish: %w", err)
	}
	return s.publish(kind)
}

func (s *Sim) publish(kind string) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch s.state {
	case lifecycleNew:
		return "", ErrNotStarted
	case lifecycleStopped:
		return "", ErrClosed
	}

	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	topic, msg, err := s.gen.next(kind, time.Now())
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(msg)
	if err != nil {
		return "", fmt.Errorf("plantsim: encode %s: %w", msg.MessageID, err)
	}
	if err := s.broker.Publish(topic, payload, false, 1); err != nil {
		return "", fmt.Errorf("%w: publish %s: %w", ErrMQTT, msg.MessageID, err)
	}
	s.published.Add(1)
	return msg.MessageID, nil
}

func (s *Sim) runMES(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.MESInterval)
	defer t.Stop()
	var failures uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.publish(""); err != nil {
				// Logged at powers of two so a broken broker cannot flood
				// the log at the publishing rate.
				failures++
				if failures&(failures-1) == 0 {
					s.logger.Warn("publish mes message failed", "error", err, "failures", failures)
				}
			}
		}
	}
}

func (s *Sim) runMachines(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.MachineInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, c := range s.plant.step(now) {
				// gopcua does not notice value changes behind a value
				// function; subscribers hear of them only through this.
				key := c.m.key()
				if c.state {
					s.ua.ns.ChangeNotification(ua.NewStringNodeID(namespaceIndex, key+"."+VarState))
				}
				if c.count {
					s.ua.ns.ChangeNotification(ua.NewStringNodeID(namespaceIndex, key+"."+VarGoodCount))
				}
				if c.temp {
					s.ua.ns.ChangeNotification(ua.NewStringNodeID(namespaceIndex, key+"."+VarTemperature))
				}
			}
		}
	}
}

// dialable turns a wildcard listen address into one a local client can
// dial.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}
