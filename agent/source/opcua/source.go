package opcua

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/agent/buffer"
	"github.com/plantsync/plantsync/agent/source"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// Factory registers the type with the agent.
var Factory = source.Factory{
	Type:             "opcua",
	NewDefaultConfig: func() source.Config { return NewDefaultConfig() },
	New: func(cfg source.Config, env source.Env) (source.Source, error) {
		return New(cfg.(*Config), env)
	},
}

// ErrInvalidConfig is wrapped when New gets a config Validate rejects.
var ErrInvalidConfig = errors.New("invalid opc ua source config")

type itemKind int

const (
	kindValue itemKind = iota
	kindEvent
)

// Item states, for metrics and status.
const (
	itemPending int32 = iota
	itemGood
	itemBad
)

// lastValue is the newest value of a node the source handed on.
type lastValue struct {
	ts     time.Time
	id     string
	status ua.StatusCode
	raw    string
}

// item is one monitored item: a node's value or a notifier's events. Its
// client handle is its index in Source.items and never changes, so
// notifications of an old session still find the right item.
type item struct {
	handle uint32
	key    string // the node as configured or browsed; part of event ids
	src    string // source name
	uri    string // endpoint#key
	kind   itemKind
	ref    nodeRef    // configured nodes and notifiers, resolved per session
	fixed  *ua.NodeID // browsed nodes
	m      *mapping
	em     *eventMapping
	opts   ItemOptions
	rule   int // browse rule index, -1 for configured nodes and events
	name   string
	path   string
	caps   []string

	// Owned by the session goroutine.
	nodeID         *ua.NodeID
	sub            *subscription
	monitoredID    uint32
	filterRejected bool
	historyChecked bool
	euChecked      bool // the EURange read was answered
	// gapEpoch is the session whose gap this node's back-fill was settled
	// for (takeGapMarks).
	gapEpoch uint64

	// Shared.
	state      atomic.Int32
	reason     atomic.Pointer[string]
	historized atomic.Bool
	euRange    atomic.Pointer[[2]float64]
	removed    atomic.Bool
	recreate   atomic.Bool               // the server reported the node unknown
	mark       atomic.Pointer[lastValue] // back-fill mark of historized nodes
	// gap is non-zero while a back-fill of this node is owed: its mark is
	// then not committed, so that an agent restart in the meantime reads
	// the gap from where it began (a re-read value keeps its id). The value
	// numbers the gap (takeGapMarks), so that the end of an older gap
	// cannot close a newer one (handleHistory).
	gap atomic.Uint64

	// Owned by the processor goroutine.
	last      lastValue
	liveEpoch uint64
	liveFrom  time.Time
	dbLast    float64
	dbStatus  ua.StatusCode
	dbHave    bool
}

func (it *item) setState(st int32, reason string) {
	it.state.Store(st)
	if reason == "" {
		it.reason.Store(nil)
	} else {
		it.reason.Store(&reason)
	}
}

// Source is one OPC UA endpoint with its subscriptions.
type Source struct {
	cfg   *Config
	env   source.Env
	log   *slog.Logger
	m     *metrics
	trust trustStore
	ident identity

	nodeMaps  []*mapping // per cfg.Nodes
	ruleMaps  []*mapping // per cfg.Browse
	rulePaths [][]segment
	eventMaps []*eventMapping

	items    atomic.Pointer[[]*item]
	byKey    map[string]*item // session goroutine
	restored map[string]lastValue

	notifs  chan notification
	history chan historyBatch
	lost    chan error
	recheck chan struct{}
	epoch   atomic.Uint64

	pump *pump

	security atomic.Pointer[string] // "policy/mode" of the current session

	mu      sync.Mutex
	health  source.Health
	started bool
	stopped bool
	cancel  context.CancelFunc
	pcancel context.CancelFunc
	// pctx is the processor's context: forward hands notifications on
	// until it ends, after the session's at shutdown.
	pctx context.Context
	wg   sync.WaitGroup
	pwg  sync.WaitGroup

	// gapSeq numbers the gaps (item.gap).
	gapSeq atomic.Uint64
	// gapPending holds, per historized node, the mark its back-fill has to
	// read from, until that read succeeded (session goroutine only).
	gapPending map[*item]lastValue

	// Test hooks.
	now func() time.Time
	// beforeBackfill, when set, runs between subscribing and back-filling
	// (a test widens the window in which live values arrive first).
	beforeBackfill atomic.Pointer[func()]
}

// New builds the source; Start connects. It compiles the mappings, so a
// config that passed Validate cannot fail here.
func New(cfg *Config, env source.Env) (*Source, error) {
	if errs := cfg.Validate("opcua"); len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{
		cfg: cfg, env: env, log: log, m: newMetrics(env.Registerer),
		trust:    newTrustStore(cfg.Trust, env.StateDir),
		byKey:    map[string]*item{},
		restored: map[string]lastValue{},
		notifs:   make(chan notification, 256),
		history:  make(chan historyBatch, 4),
		lost:     make(chan error, 1),
		recheck:  make(chan struct{}, 1),
		health:   source.Health{State: source.StateStarting},
		now:      time.Now,
	}
	empty := []*item{}
	s.items.Store(&empty)
	for _, n := range cfg.Nodes {
		m, err := compileMapping(orDefault(n.EventType, "observation"), n.Fields, n.ValueMap, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		s.nodeMaps = append(s.nodeMaps, m)
	}
	for _, r := range cfg.Browse {
		segs, _ := parsePattern(r.Path)
		m, err := compileMapping(orDefault(r.EventType, "observation"), r.Fields, r.ValueMap, captures(segs))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		s.ruleMaps = append(s.ruleMaps, m)
		s.rulePaths = append(s.rulePaths, segs)
	}
	for _, e := range cfg.Events {
		em, err := compileEventMapping(orDefault(e.EventType, "machine.alarm"), e.Fields, e.Select)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		s.eventMaps = append(s.eventMaps, em)
	}
	s.pump = newPump(env.Sink, env.Name, cfg.MaxPending, log, s.m)
	return s, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Start loads the client certificate (generating one on first start) and
// the back-fill marks, then connects in the background. It returns quickly;
// a server that is down is retried, not an error.
func (s *Source) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return nil
	}
	if s.env.Sink == nil {
		return fmt.Errorf("opc ua source %s: no sink", s.env.Name)
	}
	appURI := s.cfg.Certificate.ApplicationURI
	if appURI == "" {
		appURI = fmt.Sprintf("urn:plantsync:agent:%s:%s", orDefault(s.env.AgentID, "agent"), orDefault(s.env.Name, "opcua"))
	}
	ident, created, err := loadIdentity(s.cfg.Certificate, s.env.StateDir, appURI)
	if err != nil {
		return err
	}
	if created {
		certPath, _ := ownPaths(s.env.StateDir)
		s.log.Info("generated the OPC UA client certificate; the server must trust it before secure connections work",
			"path", certPath, "application_uri", ident.appURI, "sha256", Fingerprint(ident.cert))
	}
	s.ident = ident
	if err := s.env.Sink.ReadState(s.env.Name, func(k, v []byte) error {
		if lv, ok := decodeMark(v); ok {
			s.restored[string(k)] = lv
		}
		return nil
	}); err != nil {
		return fmt.Errorf("opc ua source %s: read back-fill marks: %w", s.env.Name, err)
	}
	s.buildStaticItems()

	pctx, pcancel := context.WithCancel(context.WithoutCancel(ctx))
	rctx, rcancel := context.WithCancel(context.WithoutCancel(ctx))
	s.pctx, s.pcancel, s.cancel = pctx, pcancel, rcancel
	s.pump.start(pctx)
	s.pwg.Add(1)
	go s.process(pctx)
	s.wg.Add(1)
	go s.run(rctx)
	s.started = true
	s.log.Info("opc ua source started", "endpoint", s.cfg.Endpoint, "policy", s.cfg.Security.Policy,
		"mode", s.cfg.Security.Mode, "nodes", len(s.cfg.Nodes), "browse_rules", len(s.cfg.Browse), "notifiers", len(s.cfg.Events))
	return nil
}

// buildStaticItems creates the items of configured nodes and notifiers.
func (s *Source) buildStaticItems() {
	for i, n := range s.cfg.Nodes {
		ref, _ := parseNodeRef(n.NodeID)
		s.addItem(&item{key: ref.text, kind: kindValue, ref: ref, m: s.nodeMaps[i], opts: s.itemOptions(n.ItemOptions), rule: -1})
	}
	for i, e := range s.cfg.Events {
		ref, _ := parseNodeRef(orDefault(e.Notifier, "i=2253"))
		key := ref.text
		if s.byKey[key] != nil {
			key = fmt.Sprintf("%s#%d", key, i)
		}
		qs := e.QueueSize
		if qs == 0 {
			qs = 1000
		}
		s.addItem(&item{key: key, kind: kindEvent, ref: ref, em: s.eventMaps[i], opts: ItemOptions{QueueSize: qs}, rule: -1})
	}
}

func (s *Source) itemOptions(o ItemOptions) ItemOptions {
	if o.SamplingInterval == 0 {
		o.SamplingInterval = s.cfg.Subscription.SamplingInterval
	}
	if o.QueueSize == 0 {
		o.QueueSize = s.cfg.Subscription.QueueSize
	}
	if o.Backfill == "" {
		o.Backfill = BackfillAuto
	}
	return o
}

// addItem registers it; only the session goroutine (or Start, before it
// runs) calls it.
func (s *Source) addItem(it *item) {
	old := *s.items.Load()
	it.handle = uint32(len(old))
	it.src = s.env.Name
	it.uri = s.cfg.Endpoint + "#" + it.key
	if lv, ok := s.restored[it.key]; ok {
		it.last = lv
		it.mark.Store(&lv)
	}
	next := make([]*item, len(old), len(old)+1)
	copy(next, old)
	next = append(next, it)
	s.items.Store(&next)
	s.byKey[it.key] = it
}

// Shutdown stops the session (closing it on the server, so a PLC's session
// slot is free at once) and writes what is still queued while ctx allows.
func (s *Source) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	started := s.started
	s.mu.Unlock()
	if !started {
		s.setHealth(source.StateStopped, false, nil)
		return nil
	}
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("opc ua source %s: stop session: %w", s.env.Name, ctx.Err())
	}
	s.pcancel()
	s.pwg.Wait()
	s.pump.wg.Wait()
	if left := s.pump.drain(ctx); left > 0 {
		s.log.Warn("values not written at shutdown", "values", left)
	}
	s.setHealth(source.StateStopped, false, nil)
	s.m.connected.Set(0)
	s.log.Info("opc ua source stopped")
	return err
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

// ItemStatus is one monitored item as the status API shows it.
type ItemStatus struct {
	Node   string `json:"node"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// Items lists the monitored items and their state.
func (s *Source) Items() []ItemStatus {
	var out []ItemStatus
	for _, it := range *s.items.Load() {
		if it.removed.Load() {
			continue
		}
		st := ItemStatus{Node: it.key, State: [...]string{"pending", "good", "bad"}[it.state.Load()]}
		if r := it.reason.Load(); r != nil {
			st.Reason = *r
		}
		out = append(out, st)
	}
	return out
}

// Security is the policy and mode of the current session, e.g.
// "Basic256Sha256/SignAndEncrypt"; "" while not connected.
func (s *Source) Security() string {
	if p := s.security.Load(); p != nil {
		return *p
	}
	return ""
}

// Admin implements source.AdminHandler: GET /items lists the monitored
// items with their state and, for bad ones, the server's reason.
func (s *Source) Admin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		items := s.Items()
		if items == nil {
			items = []ItemStatus{}
		}
		_ = json.NewEncoder(w).Encode(struct {
			Security string       `json:"security,omitempty"`
			Items    []ItemStatus `json:"items"`
		}{s.Security(), items})
	})
	return mux
}

// Appended is how many events the buffer has committed from this source.
func (s *Source) Appended() uint64 { return s.pump.appended.Load() }

// --- processor -------------------------------------------------------------

// historyBatch carries values read back with HistoryRead to the processor.
type historyBatch struct {
	it     *item
	values []*ua.DataValue
	since  lastValue
	epoch  uint64
	// closes, when set, carries no values: the node's back-fill is done and
	// this ends its gap numbered closes (closeGap).
	closes uint64
}

// process is the only goroutine that maps values: live notifications and
// back-filled history go through it in order, so per-node state (deadband,
// last value) needs no locks.
func (s *Source) process(ctx context.Context) {
	defer s.pwg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-s.notifs:
			s.handleNotification(n.data, n.epoch)
		case hb := <-s.history:
			s.handleHistory(hb)
		}
	}
}

// notification is a session's notification tagged with its epoch.
type notification struct {
	data  *opcua.PublishNotificationData
	epoch uint64
}

// handleNotification maps one notification of the session numbered epoch.
func (s *Source) handleNotification(n *opcua.PublishNotificationData, epoch uint64) {
	if n.Error != nil {
		s.m.errors.WithLabelValues("publish").Inc()
		s.log.Debug("publish error", "error", n.Error)
		return
	}
	items := *s.items.Load()
	now := s.now()
	switch v := n.Value.(type) {
	case *ua.DataChangeNotification:
		s.m.notifications.Add(float64(len(v.MonitoredItems)))
		for _, mi := range v.MonitoredItems {
			if mi == nil || int(mi.ClientHandle) >= len(items) || mi.Value == nil {
				s.m.errors.WithLabelValues("publish").Inc()
				continue
			}
			it := items[mi.ClientHandle]
			if it.kind != kindValue || it.removed.Load() {
				continue
			}
			s.handleValue(it, mi.Value, now, epoch)
		}
	case *ua.EventNotificationList:
		s.m.notifications.Add(float64(len(v.Events)))
		for _, ef := range v.Events {
			if ef == nil || int(ef.ClientHandle) >= len(items) {
				s.m.errors.WithLabelValues("publish").Inc()
				continue
			}
			it := items[ef.ClientHandle]
			if it.kind != kindEvent {
				continue
			}
			ev := buildAlarmEvent(it, ef.EventFields, s.env.Plant, s.cfg.Endpoint, now)
			if ev.Type == "source.error" {
				s.m.errors.WithLabelValues("mapping").Inc()
			}
			s.pump.add("", ev, nil)
		}
	case *ua.StatusChangeNotification:
		if isBad(v.Status) {
			s.signalLost(fmt.Errorf("subscription ended by the server: %s", statusText(v.Status)))
		}
	}
}

func (s *Source) signalLost(err error) {
	select {
	case s.lost <- err:
	default:
	}
}

func (s *Source) handleValue(it *item, dv *ua.DataValue, now time.Time, epoch uint64) {
	status := dv.Status
	if status == ua.StatusBadNodeIDUnknown || status == ua.StatusBadNodeIDInvalid {
		// The node is gone from the server: report it, and let the session
		// take the item out and retry it alone later.
		if it.state.Load() != itemBad {
			it.setState(itemBad, statusText(status))
			it.recreate.Store(true)
			select {
			case s.recheck <- struct{}{}:
			default:
			}
		}
	}
	if !s.passDeadband(it, dv) {
		return
	}
	ev, lv := buildValueEvent(it, dv, s.env.Plant, s.cfg.Endpoint, now)
	if lv.id == it.last.id || isBad(status) && status == it.last.status && lv.raw == it.last.raw {
		// The same value again (an initial value after a reconnect) or a
		// bad status repeated: once is enough.
		return
	}
	if epoch > it.liveEpoch {
		// The first live value of a newer session: the back-fill of that
		// session stops here. A value of an older session does not move it.
		it.liveEpoch, it.liveFrom = epoch, lv.ts
	}
	s.deliver(it, ev, lv)
}

func (s *Source) handleHistory(hb historyBatch) {
	it := hb.it
	if hb.closes != 0 {
		// Every value the back-fill read came before this on the same
		// channel: from here on the node's marks are committed again.
		it.gap.CompareAndSwap(hb.closes, 0)
		return
	}
	now := s.now()
	for _, dv := range hb.values {
		if dv == nil {
			continue
		}
		ev, lv := buildValueEvent(it, dv, s.env.Plant, s.cfg.Endpoint, now)
		switch {
		case lv.ts.Before(hb.since.ts), lv.ts.Equal(hb.since.ts) && lv.id == hb.since.id:
			continue // delivered before the gap
		case it.liveEpoch == hb.epoch && !lv.ts.Before(it.liveFrom):
			continue // the live subscription covers it
		case lv.id == it.last.id:
			continue
		}
		s.m.backfilled.Inc()
		s.deliver(it, ev, lv)
	}
}

func (s *Source) deliver(it *item, ev *pb.Event, lv lastValue) {
	if ev.Type == "source.error" {
		s.m.errors.WithLabelValues("mapping").Inc()
	}
	if it.last.id == "" || !lv.ts.Before(it.last.ts) {
		it.last = lv
	}
	var state *buffer.StateWrite
	if it.historized.Load() && !lv.ts.IsZero() {
		if mk := it.mark.Load(); mk == nil || lv.ts.After(mk.ts) {
			it.mark.Store(&lv)
			if it.gap.Load() == 0 {
				state = &buffer.StateWrite{Source: s.env.Name, Key: []byte(it.key), Value: encodeMark(lv)}
			}
		}
	}
	s.pump.add(it.key, ev, state)
}

// passDeadband applies the configured deadband in the agent, the same way
// the server should (Part 4, 7.22.2), for servers that ignore the filter.
func (s *Source) passDeadband(it *item, dv *ua.DataValue) bool {
	db := it.opts.Deadband
	if db.Type == "" {
		return true
	}
	f, ok := numeric(dv.Value)
	if !ok || isBad(dv.Status) || !it.dbHave || dv.Status != it.dbStatus {
		it.dbLast, it.dbHave, it.dbStatus = f, ok, dv.Status
		return true
	}
	limit := db.Value
	if db.Type == DeadbandPercent {
		r := it.euRange.Load()
		if r == nil {
			return true // no EURange known: the server's filter is all there is
		}
		limit = db.Value / 100 * math.Abs(r[1]-r[0])
	}
	if math.Abs(f-it.dbLast) <= limit {
		return false
	}
	it.dbLast = f
	return true
}

func numeric(v *ua.Variant) (float64, bool) {
	if v == nil {
		return 0, false
	}
	switch x := v.Value().(type) {
	case int8:
		return float64(x), true
	case int16:
		return float64(x), true
	case int32:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint8:
		return float64(x), true
	case uint16:
		return float64(x), true
	case uint32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float32:
		return float64(x), true
	case float64:
		return x, !math.IsNaN(x)
	}
	return 0, false
}

// valueTime is when a value was taken: its source timestamp, else the
// server's (part of the event id, and what marks and back-fill compare).
func valueTime(dv *ua.DataValue) time.Time {
	if dv.SourceTimestamp.IsZero() {
		return dv.ServerTimestamp
	}
	return dv.SourceTimestamp
}

// buildValueEvent maps one value of a node. It never fails: a value the
// mapping cannot take becomes a source.error event naming the node and
// field, and a bad-quality value becomes an event carrying that quality.
func buildValueEvent(it *item, dv *ua.DataValue, plant, endpoint string, now time.Time) (*pb.Event, lastValue) {
	status := dv.Status
	ts := valueTime(dv)
	m := it.m
	obs := &pb.Observation{StatusCode: uint32(status)}
	raw := setObservation(obs, dv.Value)
	lv := lastValue{ts: ts, status: status, raw: raw}
	if ts.IsZero() {
		u, _ := uuid.NewV7()
		lv.id = u.String()
	} else {
		lv.id = EventID(plant, endpoint, it.key, ts, raw, uint32(status))
	}
	occurred := ts
	if occurred.IsZero() {
		occurred = now
	}
	ev := &pb.Event{
		Id:            lv.id,
		CorrelationId: lv.id,
		Plant:         plant,
		Source:        &pb.Source{Name: it.src, Kind: "opcua", Uri: it.uri},
		Type:          m.eventType,
		OccurredAt:    timestamppb.New(occurred),
		ObservedAt:    timestamppb.New(now),
		SchemaVersion: 1,
	}
	if !dv.SourceTimestamp.IsZero() {
		obs.SourceTimestamp = timestamppb.New(dv.SourceTimestamp)
	}
	if !dv.ServerTimestamp.IsZero() {
		obs.ServerTimestamp = timestamppb.New(dv.ServerTimestamp)
	}
	value := raw
	if mapped, ok := m.valueMap[raw]; ok {
		value = mapped
	}
	get := func(v int) string {
		switch v {
		case varValue:
			return value
		case varRaw:
			return raw
		case varNodeID:
			return sanitize(it.key)
		case varBrowseName:
			return sanitize(it.name)
		case varPath:
			return sanitize(it.path)
		case varStatus:
			return statusText(status)
		case varSourceTS:
			return scalarText(dv.SourceTimestamp, 0)
		case varServerTS:
			return scalarText(dv.ServerTimestamp, 0)
		}
		if i := v - varCapture; i >= 0 && i < len(it.caps) {
			return sanitize(it.caps[i])
		}
		return ""
	}
	if m.observation {
		if err := m.apply(obs.ProtoReflect(), get); err != nil && !isBad(status) {
			return sourceError(ev, fmt.Sprintf("node %s: %v", it.key, err), "node "+it.key, []byte(raw)), lv
		}
		ev.Payload = &pb.Event_Observation{Observation: obs}
		return ev, lv
	}
	// Other canonical types have no quality fields: status and timestamps
	// travel as attributes.
	ev.Attributes = map[string]string{"status_code": fmt.Sprintf("0x%08X", uint32(status)), "status": statusText(status), "data_type": obs.DataType}
	if !dv.SourceTimestamp.IsZero() {
		ev.Attributes["source_timestamp"] = dv.SourceTimestamp.UTC().Format(time.RFC3339Nano)
	}
	if !dv.ServerTimestamp.IsZero() {
		ev.Attributes["server_timestamp"] = dv.ServerTimestamp.UTC().Format(time.RFC3339Nano)
	}
	if value != raw {
		ev.Attributes["raw_value"] = raw
	}
	r := ev.ProtoReflect()
	payload := r.NewField(m.payload)
	if err := m.apply(payload.Message(), get); err != nil && !isBad(status) {
		return sourceError(ev, fmt.Sprintf("node %s: %v", it.key, err), "node "+it.key, []byte(raw)), lv
	}
	r.Set(m.payload, payload)
	return ev, lv
}

// Back-fill marks are kept in the buffer's source state, committed in the
// same transaction as the values they describe.
func encodeMark(lv lastValue) []byte {
	b := make([]byte, 8, 8+len(lv.id))
	binary.BigEndian.PutUint64(b, uint64(lv.ts.UnixNano()))
	return append(b, lv.id...)
}

func decodeMark(b []byte) (lastValue, bool) {
	if len(b) < 8 {
		return lastValue{}, false
	}
	return lastValue{ts: time.Unix(0, int64(binary.BigEndian.Uint64(b))), id: string(b[8:])}, true
}
