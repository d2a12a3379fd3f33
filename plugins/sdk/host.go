package sdk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Errors of the host side.
var (
	// ErrChecksumMismatch: the binary's SHA-256 differs from the pinned
	// one; the message names both. The binary is not started.
	ErrChecksumMismatch = errors.New("plugin checksum mismatch")
	// ErrUnavailable: the plugin process is not running (it died during
	// the call, or a restart is pending or failed). For Deliver the outcome
	// is unknown: Lookup before delivering again.
	ErrUnavailable = errors.New("plugin unavailable")
	// ErrClosed: the host was closed.
	ErrClosed = errors.New("plugin host closed")
	// ErrConfig: the host config or the plugin's config section is invalid.
	ErrConfig = errors.New("invalid plugin config")
	// ErrWrongKind: the binary serves the other kind (a source plugin
	// configured as a destination, or the reverse).
	ErrWrongKind = errors.New("plugin serves another kind")
)

// HostConfig says which plugin binary to run and how.
type HostConfig struct {
	// Name is the configured instance name (destination or source name);
	// logs and metrics carry it. Default: the binary's file name.
	Name string
	// Path of the plugin binary.
	Path string
	// SHA256 pins the binary (hex); a mismatch refuses to start it.
	SHA256 string
	// Config is the plugin's own config section. String values under
	// secret-named keys (see IsSecretKey) are file:PATH or env:NAME
	// references; the host resolves them and scrubs the values from
	// everything the plugin logs or answers.
	Config map[string]any
	// Secrets are further values to scrub.
	Secrets []string
	// Logger receives the host's and the plugin's log records.
	Logger *slog.Logger
	// Metrics observes calls and restarts; nil: none.
	Metrics Metrics
	// StartTimeout bounds process start plus Configure (default 10s).
	StartTimeout time.Duration
	// RestartBackoff is the wait before the second of quick successive
	// restarts, doubling up to RestartBackoffMax (defaults 200ms, 30s). The
	// first restart after a crash is immediate.
	RestartBackoff    time.Duration
	RestartBackoffMax time.Duration
	// HangAfter consecutive calls that ran out of time make the host check
	// that the plugin process still answers at all, with HealthTimeout
	// (defaults 3, 5s). The check is go-plugin's gRPC health service,
	// which the process answers without the connector, so a slow target
	// never fails it: a process that does not answer it is wedged
	// (stopped, starved, its runtime stuck) and is killed and restarted.
	HangAfter     int
	HealthTimeout time.Duration
}

// HostStatus is what a status page shows of a plugin.
type HostStatus struct {
	Running bool
	PID     int
	// Restarts counts restarts after the process died.
	Restarts  int
	LastError string
	Info      ConfigureResponse
}

// stableAfter is how long a plugin process must have lived for its death
// to count as a fresh crash (immediate restart) rather than part of a crash
// loop (growing backoff).
const stableAfter = time.Minute

// pid is the plugin process's id (0 before it started).
func (i *instance) pid() int {
	if i.cmd == nil || i.cmd.Process == nil {
		return 0
	}
	return i.cmd.Process.Pid
}

type instance struct {
	client  *plugin.Client
	cmd     *exec.Cmd        // its Process signals through a pidfd: never another process
	conn    *grpc.ClientConn // for the liveness check
	dest    *destinationClient
	src     *sourceClient
	started time.Time

	// timeouts counts consecutive calls that ran out of time; probing is
	// set while a health probe runs (guarded by host.mu).
	timeouts int
	probing  bool
}

type host struct {
	cfg     HostConfig
	kind    string
	sum     []byte
	log     *slog.Logger
	metrics Metrics

	mu        sync.Mutex
	cur       *instance
	starting  chan struct{}
	closed    bool
	crashes   int
	nextStart time.Time
	lastErr   error
	restarts  int
	probes    sync.WaitGroup // running liveness checks
	kills     sync.WaitGroup // processes being ended by dropBecause
	req       ConfigureRequest
	info      ConfigureResponse
	scrub     *Scrubber
}

func newHost(kind string, cfg HostConfig) (*host, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("%w: path is required", ErrConfig)
	}
	sum, err := ParseSHA256(cfg.SHA256)
	if err != nil {
		return nil, err
	}
	raw, _ := hex.DecodeString(sum)
	if cfg.Name == "" {
		cfg.Name = filepath.Base(cfg.Path)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = startTimeoutDefault
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = 200 * time.Millisecond
	}
	if cfg.RestartBackoffMax < cfg.RestartBackoff {
		cfg.RestartBackoffMax = max(30*time.Second, cfg.RestartBackoff)
	}
	if cfg.HangAfter <= 0 {
		cfg.HangAfter = 3
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 5 * time.Second
	}
	h := &host{cfg: cfg, kind: kind, sum: raw, metrics: cfg.Metrics,
		log: cfg.Logger.With("plugin", cfg.Name), scrub: NewScrubber(cfg.Secrets...)}
	if h.metrics == nil {
		h.metrics = noMetrics{}
	}
	return h, nil
}

func (h *host) scrubber() *Scrubber {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.scrub
}

// setConfig resolves the secrets of a config section and makes it the one
// sent to every (re)started process.
func (h *host) setConfig(req ConfigureRequest) error {
	if req.Name == "" {
		req.Name = h.cfg.Name
	}
	resolved, secrets, err := ResolveSecrets("config", req.Config)
	if err != nil {
		return fmt.Errorf("plugin %s: %w", h.cfg.Name, err)
	}
	for _, s := range secrets {
		if len(s) < minSecretLen {
			h.log.Warn("a secret in the plugin config is shorter than 4 characters and cannot be scrubbed from logs; use a longer one")
		}
	}
	h.mu.Lock()
	h.req = ConfigureRequest{Name: req.Name, Config: resolved}
	h.scrub = NewScrubber(append(append([]string(nil), h.cfg.Secrets...), secrets...)...)
	h.mu.Unlock()
	return nil
}

func (h *host) backoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := h.cfg.RestartBackoff
	for i := 2; i < n && d < h.cfg.RestartBackoffMax; i++ {
		d *= 2
	}
	d = min(d, h.cfg.RestartBackoffMax)
	// Jitter keeps several crashed plugins from restarting in lockstep.
	return d/2 + rand.N(d/2+1)
}

// get returns the running instance, starting one when there is none. It
// waits for a pending restart when ctx allows and fails fast otherwise.
func (h *host) get(ctx context.Context) (*instance, error) {
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, ErrClosed
		}
		if h.cur != nil {
			inst := h.cur
			h.mu.Unlock()
			return inst, nil
		}
		if ch := h.starting; ch != nil {
			h.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: plugin %s is starting: %w", ErrUnavailable, h.cfg.Name, ctx.Err())
			}
		}
		if wait := time.Until(h.nextStart); wait > 0 {
			last := h.lastErr
			h.mu.Unlock()
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				return nil, fmt.Errorf("%w: plugin %s restarts in %s (last error: %s)", ErrUnavailable, h.cfg.Name, wait.Round(time.Millisecond), h.errText(last))
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("%w: plugin %s: %w", ErrUnavailable, h.cfg.Name, ctx.Err())
			}
		}
		ch := make(chan struct{})
		h.starting = ch
		h.mu.Unlock()

		inst, err := h.start()

		h.mu.Lock()
		h.starting = nil
		close(ch)
		if err != nil {
			h.crashes++
			h.nextStart = time.Now().Add(h.backoff(h.crashes + 1))
			h.lastErr = err
			closed := h.closed
			h.mu.Unlock()
			if closed {
				return nil, ErrClosed
			}
			h.log.Error("plugin did not start", "path", h.cfg.Path, "error", h.errText(err))
			return nil, err
		}
		if h.closed {
			h.mu.Unlock()
			h.kill(inst.client, inst.cmd, killGrace)
			return nil, ErrClosed
		}
		h.cur = inst
		h.mu.Unlock()
		h.metrics.Up(h.cfg.Name, true)
		h.log.Info("plugin started", "path", h.cfg.Path, "pid", inst.pid(), "version", h.Info().Version)
		return inst, nil
	}
}

func (h *host) errText(err error) string {
	if err == nil {
		return ""
	}
	return h.scrubber().Scrub(err.Error())
}

// start runs the binary, completes the handshake and configures it.
func (h *host) start() (*instance, error) {
	if err := VerifyChecksum(h.cfg.Path, h.cfg.SHA256); err != nil {
		return nil, err
	}
	cmd := exec.Command(h.cfg.Path)
	cmd.Env = append(os.Environ(),
		EnvLogLevel+"="+levelName(hostLevel(h.log)),
		EnvName+"="+h.cfg.Name)
	hl := newHclogAdapter(h.log, h.scrubber)
	out := &lineWriter{log: func(line string) { hl.Info(line, "stream", "output") }}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: hostPlugins(),
		Cmd:              cmd,
		// Checked again by go-plugin right before exec; VerifyChecksum
		// above gives the error that names both sums.
		SecureConfig:     &plugin.SecureConfig{Checksum: h.sum, Hash: sha256.New()},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           hl,
		StartTimeout:     h.cfg.StartTimeout,
		SyncStdout:       out,
		SyncStderr:       out,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage))},
	})
	rpc, err := client.Client()
	if err != nil {
		h.kill(client, cmd, killGrace)
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			if verr := VerifyChecksum(h.cfg.Path, h.cfg.SHA256); verr != nil {
				return nil, verr
			}
		}
		return nil, fmt.Errorf("start plugin %s (%s): %w", h.cfg.Name, h.cfg.Path, err)
	}
	raw, err := rpc.Dispense(h.kind)
	if err != nil {
		h.kill(client, cmd, killGrace)
		return nil, fmt.Errorf("start plugin %s: %w", h.cfg.Name, err)
	}
	inst := &instance{client: client, cmd: cmd, started: time.Now()}
	if gc, ok := rpc.(*plugin.GRPCClient); ok {
		inst.conn = gc.Conn
	}
	var configure func(context.Context, ConfigureRequest) (ConfigureResponse, error)
	switch c := raw.(type) {
	case *destinationClient:
		inst.dest, configure = c, c.Configure
	case *sourceClient:
		inst.src, configure = c, c.Configure
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.StartTimeout)
	defer cancel()
	h.mu.Lock()
	req := h.req
	h.mu.Unlock()
	info, err := configure(ctx, req)
	if err != nil {
		h.kill(client, cmd, killGrace)
		if errors.Is(err, ErrUnsupported) {
			return nil, fmt.Errorf("%w: %s does not serve a %s", ErrWrongKind, h.cfg.Path, h.kind)
		}
		if _, remote := err.(*remoteError); remote {
			return nil, fmt.Errorf("%w: plugin %s: %s", ErrConfig, h.cfg.Name, h.errText(err))
		}
		return nil, fmt.Errorf("configure plugin %s: %s", h.cfg.Name, h.errText(err))
	}
	h.mu.Lock()
	h.info = info
	h.mu.Unlock()
	return inst, nil
}

// failed reports whether err means the plugin process is gone.
func (h *host) failed(inst *instance, err error) bool {
	if err == nil {
		return false
	}
	if inst.client.Exited() {
		return true
	}
	if _, remote := err.(*remoteError); remote {
		return false
	}
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable
}

// drop forgets a dead (or wedged) instance so that the next call restarts
// the plugin.
func (h *host) drop(inst *instance, cause error) {
	h.dropBecause(inst, cause, "plugin process died; restarting it", killGrace)
}

// dropBecause forgets inst, logs msg, and ends its process (SIGKILL after
// grace).
func (h *host) dropBecause(inst *instance, cause error, msg string, grace time.Duration) {
	h.mu.Lock()
	if h.cur != inst {
		h.mu.Unlock()
		return
	}
	h.cur = nil
	if time.Since(inst.started) >= stableAfter {
		h.crashes = 0
	}
	h.crashes++
	wait := h.backoff(h.crashes)
	h.nextStart = time.Now().Add(wait)
	h.lastErr = cause
	h.restarts++
	h.mu.Unlock()
	h.metrics.Up(h.cfg.Name, false)
	h.metrics.Restarted(h.cfg.Name)
	h.log.Warn(msg, "pid", inst.pid(), "error", h.errText(cause), "restart_in", wait.Round(time.Millisecond))
	h.kills.Add(1)
	defer h.kills.Done()
	h.kill(inst.client, inst.cmd, grace)
}

// killGrace is how long a plugin process may take to stop when asked
// before it gets SIGKILL.
const killGrace = 3 * time.Second

// kill ends a plugin process. go-plugin's Kill first asks the plugin to
// shut down and waits for that without a limit, so a process that cannot
// answer (stopped, starved, or with a call stuck in the connector) would
// hold it for ever: after grace it gets SIGKILL, and Kill then returns.
// The signal goes through the process handle (a pidfd), so a process that
// is already gone is never mistaken for another one with its pid.
func (h *host) kill(client *plugin.Client, cmd *exec.Cmd, grace time.Duration) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		client.Kill()
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	if cmd == nil || cmd.Process == nil || client.Exited() {
		<-done
		return
	}
	h.log.Warn("plugin process did not stop when asked; killing it", "pid", cmd.Process.Pid)
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(killGrace):
		h.log.Error("plugin process did not go away after SIGKILL (a child of it may hold its output open)", "pid", cmd.Process.Pid)
	}
}

// timedOut reports whether a call failed because its own deadline passed,
// whichever side noticed first (the plugin's server sees the deadline too,
// and may answer DeadlineExceeded before the caller's timer fires). A call
// the caller cancelled, or an error the plugin answered with before the
// deadline, does not count: the process answered.
func timedOut(ctx context.Context, err error) bool {
	if err == nil || errors.Is(ctx.Err(), context.Canceled) {
		return false
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// noteCall counts consecutive timed-out calls of inst; at HangAfter it
// starts one liveness check.
func (h *host) noteCall(ctx context.Context, inst *instance, err error) {
	h.mu.Lock()
	if !timedOut(ctx, err) {
		inst.timeouts = 0
		h.mu.Unlock()
		return
	}
	inst.timeouts++
	probe := inst.timeouts >= h.cfg.HangAfter && !inst.probing && h.cur == inst && !h.closed && inst.conn != nil
	if probe {
		inst.probing = true
		h.probes.Add(1)
	}
	n := inst.timeouts
	h.mu.Unlock()
	if probe {
		go h.probe(inst, n)
	}
}

// probe checks that a plugin whose calls keep timing out still answers
// go-plugin's health service; no answer within HealthTimeout means the
// process is wedged.
func (h *host) probe(inst *instance, timeouts int) {
	defer h.probes.Done()
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.HealthTimeout)
	defer cancel()
	_, err := grpc_health_v1.NewHealthClient(inst.conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: plugin.GRPCServiceName})
	h.mu.Lock()
	inst.probing = false
	if err == nil {
		inst.timeouts = 0 // alive: count afresh
	}
	closed := h.closed
	h.mu.Unlock()
	switch {
	case err == nil:
		h.log.Warn("plugin calls keep running out of time, but the plugin process answers: its target is slow", "timeouts", timeouts)
	case closed:
	default:
		// It cannot answer a request to stop either: SIGKILL at once.
		h.dropBecause(inst, fmt.Errorf("%d calls in a row ran out of time and the process did not answer a liveness check within %s: %v", timeouts, h.cfg.HealthTimeout, err),
			"plugin process stopped answering; killing and restarting it", 0)
	}
}

// call runs fn against the running instance and classifies the result.
func (h *host) call(ctx context.Context, method string, fn func(*instance) (result string, err error)) error {
	start := time.Now()
	inst, err := h.get(ctx)
	if err != nil {
		h.metrics.Call(h.cfg.Name, method, "unavailable", time.Since(start))
		return err
	}
	result, err := fn(inst)
	h.noteCall(ctx, inst, err)
	switch {
	case err == nil:
	case h.failed(inst, err):
		h.drop(inst, err)
		result = "unavailable"
		err = fmt.Errorf("%w: plugin %s: %s: %s", ErrUnavailable, h.cfg.Name, method, h.errText(err))
	default:
		result = "error"
		err = h.scrubError(err)
	}
	h.metrics.Call(h.cfg.Name, method, result, time.Since(start))
	return err
}

func (h *host) scrubError(err error) error {
	var re *remoteError
	if errors.As(err, &re) {
		return &remoteError{msg: fmt.Sprintf("plugin %s: %s", h.cfg.Name, h.errText(re)), kind: re.kind}
	}
	return &remoteError{msg: fmt.Sprintf("plugin %s: %s", h.cfg.Name, h.errText(err))}
}

func (h *host) Info() ConfigureResponse {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.info
}

func (h *host) status() HostStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := HostStatus{Running: h.cur != nil, Restarts: h.restarts, Info: h.info}
	if h.cur != nil {
		st.PID = h.cur.pid()
	}
	if h.lastErr != nil {
		st.LastError = h.scrub.Scrub(h.lastErr.Error())
	}
	return st
}

func (h *host) close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	inst := h.cur
	h.cur = nil
	starting := h.starting
	h.mu.Unlock()
	if starting != nil {
		// The starter sees closed and kills what it started.
		<-starting
	}
	if inst != nil {
		h.kill(inst.client, inst.cmd, killGrace)
		h.log.Info("plugin stopped", "pid", inst.pid())
	}
	// A check ends within HealthTimeout, or after killing a wedged process
	// (bounded by kill); so does a process a failed call is ending.
	h.probes.Wait()
	h.kills.Wait()
	h.metrics.Up(h.cfg.Name, false)
	return nil
}

// open configures the host and starts the plugin once, so that a bad
// binary or config is reported by Open rather than by the first call.
func (h *host) open(ctx context.Context) error {
	if err := h.setConfig(ConfigureRequest{Name: h.cfg.Name, Config: h.cfg.Config}); err != nil {
		return err
	}
	if _, err := h.get(ctx); err != nil {
		_ = h.close()
		return err
	}
	return nil
}

// reconfigure applies a new config section to the running plugin and to
// every restart.
func (h *host) reconfigure(ctx context.Context, req ConfigureRequest) (ConfigureResponse, error) {
	if err := h.setConfig(req); err != nil {
		return ConfigureResponse{}, err
	}
	h.mu.Lock()
	req = h.req
	h.mu.Unlock()
	var info ConfigureResponse
	err := h.call(ctx, "configure", func(inst *instance) (string, error) {
		var err error
		if inst.dest != nil {
			info, err = inst.dest.Configure(ctx, req)
		} else {
			info, err = inst.src.Configure(ctx, req)
		}
		return "ok", err
	})
	if err != nil {
		return ConfigureResponse{}, err
	}
	h.mu.Lock()
	h.info = info
	h.mu.Unlock()
	return info, nil
}

// DestinationHost runs a destination plugin process and implements
// Destination by calling it. It is safe for concurrent use; calls with
// different ordering keys may run in parallel.
type DestinationHost struct{ h *host }

var _ Destination = (*DestinationHost)(nil)

// OpenDestination starts the destination plugin of cfg (checksum checked,
// handshake, AutoMTLS) and configures it with cfg.Config. Close ends it.
func OpenDestination(ctx context.Context, cfg HostConfig) (*DestinationHost, error) {
	h, err := newHost(KindDestination, cfg)
	if err != nil {
		return nil, err
	}
	if err := h.open(ctx); err != nil {
		return nil, err
	}
	return &DestinationHost{h: h}, nil
}

// Info is the plugin's answer to Configure: actions and capabilities.
func (d *DestinationHost) Info() ConfigureResponse { return d.h.Info() }

// Status reports the plugin process's state.
func (d *DestinationHost) Status() HostStatus { return d.h.status() }

// Close ends the plugin process. It is idempotent.
func (d *DestinationHost) Close() error { return d.h.close() }

// Configure replaces the config section (secret references are resolved
// as for HostConfig.Config) and applies it now and after every restart.
func (d *DestinationHost) Configure(ctx context.Context, req ConfigureRequest) (ConfigureResponse, error) {
	return d.h.reconfigure(ctx, req)
}

// Deliver implements Destination. An error means the outcome is unknown
// (ErrUnavailable: the plugin died during the call and is restarted by the
// next call); Lookup before delivering again.
func (d *DestinationHost) Deliver(ctx context.Context, req DeliverRequest) (DeliverResponse, error) {
	var res DeliverResponse
	err := d.h.call(ctx, "deliver", func(inst *instance) (string, error) {
		var err error
		res, err = inst.dest.Deliver(ctx, req)
		return string(res.Outcome), err
	})
	if err != nil {
		return DeliverResponse{}, err
	}
	res.Message = d.h.scrubber().Scrub(res.Message)
	return res, nil
}

// Lookup implements Destination.
func (d *DestinationHost) Lookup(ctx context.Context, req LookupRequest) (LookupResponse, error) {
	var res LookupResponse
	err := d.h.call(ctx, "lookup", func(inst *instance) (string, error) {
		var err error
		res, err = inst.dest.Lookup(ctx, req)
		return "ok", err
	})
	if err != nil {
		return LookupResponse{}, err
	}
	res.Message = d.h.scrubber().Scrub(res.Message)
	return res, nil
}

// List implements Destination.
func (d *DestinationHost) List(ctx context.Context, req ListRequest) (ListResponse, error) {
	var res ListResponse
	err := d.h.call(ctx, "list", func(inst *instance) (string, error) {
		var err error
		res, err = inst.dest.List(ctx, req)
		return "ok", err
	})
	return res, err
}

// Changes implements Destination.
func (d *DestinationHost) Changes(ctx context.Context, req ChangesRequest) (ChangesResponse, error) {
	var res ChangesResponse
	err := d.h.call(ctx, "changes", func(inst *instance) (string, error) {
		var err error
		res, err = inst.dest.Changes(ctx, req)
		return "ok", err
	})
	return res, err
}

// Health implements Destination.
func (d *DestinationHost) Health(ctx context.Context, req HealthRequest) (HealthResponse, error) {
	var res HealthResponse
	err := d.h.call(ctx, "health", func(inst *instance) (string, error) {
		var err error
		res, err = inst.dest.Health(ctx, req)
		return "ok", err
	})
	res.Message = d.h.scrubber().Scrub(res.Message)
	return res, err
}

// SourceHost runs a source plugin process. Read and Ack implement the
// Source contract across plugin restarts: seq numbers keep increasing over
// restarts, and acks of records read from a process that has since died are
// dropped (the new process sends those records again).
type SourceHost struct {
	h *host

	mu      sync.Mutex
	inst    *instance
	stream  uint64
	offset  uint64 // host seq = offset + plugin seq, for the current stream
	lastSeq uint64
	reading bool
}

var _ Source = (*SourceHost)(nil)

// OpenSource starts the source plugin of cfg; see OpenDestination.
func OpenSource(ctx context.Context, cfg HostConfig) (*SourceHost, error) {
	h, err := newHost(KindSource, cfg)
	if err != nil {
		return nil, err
	}
	if err := h.open(ctx); err != nil {
		return nil, err
	}
	return &SourceHost{h: h}, nil
}

// Info is the plugin's answer to Configure.
func (s *SourceHost) Info() ConfigureResponse { return s.h.Info() }

// Status reports the plugin process's state.
func (s *SourceHost) Status() HostStatus { return s.h.status() }

// Close ends the plugin process. It is idempotent.
func (s *SourceHost) Close() error { return s.h.close() }

// Configure replaces the config section; see DestinationHost.Configure.
func (s *SourceHost) Configure(ctx context.Context, req ConfigureRequest) (ConfigureResponse, error) {
	return s.h.reconfigure(ctx, req)
}

// ErrReading is returned by a second concurrent Read.
var ErrReading = errors.New("source plugin is already being read")

// Read hands the plugin's records to send until ctx ends or send fails
// (its error is returned). A plugin that dies is restarted with backoff and
// read again; a plugin whose Read fails is asked again after a pause.
func (s *SourceHost) Read(ctx context.Context, _ ReadRequest, send func([]Record) error) error {
	s.mu.Lock()
	if s.reading {
		s.mu.Unlock()
		return ErrReading
	}
	s.reading = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.reading, s.inst = false, nil
		s.mu.Unlock()
	}()
	pause := s.h.cfg.RestartBackoff
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		inst, err := s.h.get(ctx)
		if err != nil {
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return err
			}
			// get spaces the attempts out (nextStart); try again.
			continue
		}
		s.mu.Lock()
		s.inst = inst
		s.stream++
		stream := s.stream
		s.offset = s.lastSeq
		offset := s.offset
		s.mu.Unlock()
		start := time.Now()
		err = inst.src.read(ctx, stream, func(recs []Record) error {
			s.mu.Lock()
			for i := range recs {
				recs[i].Seq += offset
				s.lastSeq = max(s.lastSeq, recs[i].Seq)
			}
			s.mu.Unlock()
			return send(recs)
		})
		var se *sendError
		switch {
		case errors.As(err, &se):
			return se.err
		case ctx.Err() != nil:
			return ctx.Err()
		case s.h.failed(inst, err):
			s.h.drop(inst, err)
			continue
		}
		if time.Since(start) > stableAfter {
			pause = s.h.cfg.RestartBackoff
		}
		s.h.log.Warn("source plugin ended its read; reading again", "error", s.h.errText(err), "in", pause)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, s.h.cfg.RestartBackoffMax)
	}
}

// Ack implements Source: records with Seq <= req.Through (host numbering)
// are committed. Acks for records of a process or stream that has ended are
// dropped.
func (s *SourceHost) Ack(ctx context.Context, req AckRequest) (AckResponse, error) {
	s.mu.Lock()
	inst, stream, offset := s.inst, s.stream, s.offset
	s.mu.Unlock()
	if inst == nil || req.Through <= offset {
		return AckResponse{}, nil
	}
	err := s.h.call(ctx, "ack", func(cur *instance) (string, error) {
		if cur != inst {
			return "ok", nil
		}
		return "ok", inst.src.ack(ctx, stream, req.Through-offset)
	})
	return AckResponse{}, err
}

// Health implements Source.
func (s *SourceHost) Health(ctx context.Context, req HealthRequest) (HealthResponse, error) {
	var res HealthResponse
	err := s.h.call(ctx, "health", func(inst *instance) (string, error) {
		var err error
		res, err = inst.src.Health(ctx, req)
		return "ok", err
	})
	res.Message = s.h.scrubber().Scrub(res.Message)
	return res, err
}
