package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/internal/failpoint"
	"github.com/plantsync/plantsync/plugins/sdk"
)

// ErrOptions marks Options that New cannot work with.
var ErrOptions = errors.New("invalid delivery engine options")

// FailpointAfterDeliver is the failpoint between a Deliver call returning
// and its outcome being recorded: a test kills the hub there to prove that
// the ledger and Lookup keep the target from getting a second document.
const FailpointAfterDeliver = "hub/delivery/after-deliver"

// Connector is what the engine calls of a destination's connector;
// *sdk.DestinationHost (a plugin process) implements it.
type Connector interface {
	Deliver(ctx context.Context, req sdk.DeliverRequest) (sdk.DeliverResponse, error)
	Lookup(ctx context.Context, req sdk.LookupRequest) (sdk.LookupResponse, error)
}

// ParkedFunc lists the failed outbox entries of dest (by Seq) whose
// delivery exception is still open. Such an entry holds back the later
// entries of its ordering key.
type ParkedFunc func(ctx context.Context, dest string) (map[uint64]bool, error)

// Options configure an Engine.
type Options struct {
	// Destination is the outbox destination the engine delivers.
	Destination string
	Config      Config
	Outbox      outbox.Store
	Connector   Connector
	// CanLookup says the connector offers sdk.CapabilityLookup. Then a
	// lookup that answers "unknown" means the target could not be asked,
	// and the engine waits instead of delivering again; without the
	// capability the engine delivers again and relies on the target's own
	// idempotency handling (the Idempotency-Key).
	CanLookup bool
	Ledger    *Ledger
	// Parked, when set, makes a parked entry hold back its ordering key.
	Parked  ParkedFunc
	Metrics *Metrics
	Logger  *slog.Logger
}

// Tuning that needs no config: how many entries the engine holds in memory
// (read ahead, in flight, or waiting for their outcome to be recorded),
// how many it marks in the ledger with one fsync, and how often it checks
// whether held-back keys were released by a resolved exception.
const (
	readWindow     = 2048
	heldLimit      = 100_000
	markBatch      = 256
	completeBatch  = 1024
	refreshEvery   = 5 * time.Second
	maxRetryAfter  = time.Hour
	storeRetryWait = time.Second
)

// Engine delivers one destination's outbox through its connector.
type Engine struct {
	name   string
	cfg    Config
	store  outbox.Store
	conn   Connector
	lookup bool
	ledger *Ledger
	parked ParkedFunc
	log    *slog.Logger
	m      *destMetrics

	mu       sync.Mutex
	lanes    map[string]*lane
	known    map[uint64]*item // read, not yet recorded in the outbox
	ready    []*lane
	unmarked []*item
	marks    map[uint64]bool // this destination's ledger marks
	held     map[*lane]bool  // lanes with blockers
	heldBack int             // items in blocked lanes
	inflight int
	breaker  breaker
	pause    time.Time // a Retry-After holds the whole destination
	wake     chan struct{}
	stopping bool

	markMu sync.Mutex // one ledger mark transaction at a time

	outcomes    chan done
	stop        chan struct{}
	callCtx     context.Context
	cancelCalls context.CancelFunc
	workers     sync.WaitGroup
	completer   sync.WaitGroup
	abort       chan struct{} // closed when Shutdown's deadline passed
	abortOnce   sync.Once
	startOnce   sync.Once
	stopOnce    sync.Once
	started     bool
	stopErr     error
}

// item is one outbox entry the engine holds.
type item struct {
	e         outbox.Entry
	attempts  int
	uncertain bool // an earlier attempt may have reached the target
	marked    bool // the ledger says an attempt may start (guarded by Engine.mu)
	lastMsg   string
}

// lane is one ordering key: its entries leave strictly in Seq order.
type lane struct {
	key      string
	items    []*item // items[0] is the next (or current) one
	busy     bool    // a worker holds items[0]
	waiting  bool    // items[0] waits for its retry
	queued   bool    // in Engine.ready
	timer    *time.Timer
	blockers map[uint64]bool // parked entries of this key
	heldBack int             // this lane's share of Engine.heldBack
}

func (l *lane) blocked() bool {
	for s := range l.blockers {
		if len(l.items) == 0 || s < l.items[0].e.Seq {
			return true
		}
	}
	return false
}

// done is an attempt's final result, waiting to be recorded.
type done struct {
	it      *item
	outcome outbox.Outcome
	// forget: the ledger mark can go once recorded (the target certainly
	// holds the document, or certainly refused it).
	forget bool
}

// New checks opts and returns an engine; Start runs it.
func New(opts Options) (*Engine, error) {
	switch {
	case opts.Destination == "":
		return nil, fmt.Errorf("%w: destination is required", ErrOptions)
	case opts.Outbox == nil || opts.Connector == nil || opts.Ledger == nil:
		return nil, fmt.Errorf("%w: %s: outbox, connector and ledger are required", ErrOptions, opts.Destination)
	}
	if errs := opts.Config.Validate("delivery"); len(errs) > 0 {
		return nil, fmt.Errorf("%w: %s: %w", ErrOptions, opts.Destination, errors.Join(errs...))
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := opts.Config.WithDefaults()
	e := &Engine{
		name: opts.Destination, cfg: cfg, store: opts.Outbox, conn: opts.Connector, lookup: opts.CanLookup,
		ledger: opts.Ledger, parked: opts.Parked, log: opts.Logger, m: opts.Metrics.forDest(opts.Destination),
		lanes: map[string]*lane{}, known: map[uint64]*item{}, marks: map[uint64]bool{}, held: map[*lane]bool{},
		breaker:  breaker{threshold: cfg.Breaker.Failures, openFor: cfg.Breaker.OpenFor},
		wake:     make(chan struct{}),
		outcomes: make(chan done, completeBatch),
		stop:     make(chan struct{}),
		abort:    make(chan struct{}),
	}
	e.m.breaker.Set(float64(BreakerClosed))
	e.m.blocked.Set(0)
	return e, nil
}

// Start loads the ledger's marks and the parked entries, then delivers in
// the background. It returns quickly.
func (e *Engine) Start(ctx context.Context) error {
	var err error
	e.startOnce.Do(func() {
		if err = e.recover(ctx); err != nil {
			return
		}
		e.callCtx, e.cancelCalls = context.WithCancel(context.WithoutCancel(ctx))
		e.started = true
		e.log.Info("delivery started", "concurrency", e.cfg.Concurrency, "uncertain", len(e.marks), "held_back_keys", len(e.held))
		e.workers.Add(1 + e.cfg.Concurrency)
		go e.read()
		for range e.cfg.Concurrency {
			go e.work()
		}
		e.completer.Add(1)
		go e.complete()
	})
	return err
}

// recover reads what the previous run left: ledger marks (attempts whose
// outcome may not have been recorded) and parked entries.
func (e *Engine) recover(ctx context.Context) error {
	seqs, err := e.ledger.Marks(e.name)
	if err != nil {
		return err
	}
	var forget []uint64
	for _, s := range seqs {
		en, err := e.store.Get(e.name, s)
		switch {
		case errors.Is(err, outbox.ErrNotFound):
			forget = append(forget, s)
		case err != nil:
			return fmt.Errorf("delivery %s: read outbox entry %d: %w", e.name, s, err)
		case en.State == outbox.StateDelivered:
			forget = append(forget, s)
		default:
			// Pending: attempted before the restart, outcome unknown.
			// Failed: kept so that a replay looks it up first.
			e.marks[s] = true
		}
	}
	e.ledger.Forget(e.name, forget)
	if e.parked == nil {
		return nil
	}
	open, err := e.parked(ctx, e.name)
	if err != nil {
		return fmt.Errorf("delivery %s: list parked entries: %w", e.name, err)
	}
	for s := range open {
		en, err := e.store.Get(e.name, s)
		if err != nil {
			if errors.Is(err, outbox.ErrNotFound) {
				continue
			}
			return fmt.Errorf("delivery %s: read parked entry %d: %w", e.name, s, err)
		}
		if en.State != outbox.StateFailed {
			continue
		}
		l := e.laneFor(laneKey(en))
		l.blockers[s] = true
		e.held[l] = true
	}
	e.m.blocked.Set(float64(len(e.held)))
	return nil
}

func laneKey(en outbox.Entry) string {
	if en.OrderingKey == "" {
		// No ordering asked for: a lane of its own.
		return fmt.Sprintf("\x00%d", en.Seq)
	}
	return en.OrderingKey
}

// laneFor returns the lane of key, creating it; e.mu is held.
func (e *Engine) laneFor(key string) *lane {
	l, ok := e.lanes[key]
	if !ok {
		l = &lane{key: key, blockers: map[uint64]bool{}}
		e.lanes[key] = l
	}
	return l
}

// signal wakes every waiting worker and the reader; e.mu is held.
func (e *Engine) signal() {
	close(e.wake)
	e.wake = make(chan struct{})
}

// enqueue queues l for a worker when its next entry may go now; e.mu is
// held.
func (e *Engine) enqueue(l *lane) {
	if l.queued || l.busy || l.waiting || len(l.items) == 0 || l.blocked() {
		return
	}
	l.queued = true
	e.ready = append(e.ready, l)
	e.signal()
}

// tidy drops an idle, empty lane and keeps the held-back count right;
// e.mu is held.
func (e *Engine) tidy(l *lane) {
	if len(l.blockers) == 0 {
		delete(e.held, l)
	} else {
		e.held[l] = true
	}
	if len(l.items) == 0 && !l.busy && !l.waiting && !l.queued && len(l.blockers) == 0 {
		delete(e.lanes, l.key)
	}
	n := 0
	if l.blocked() {
		n = len(l.items)
	}
	e.heldBack += n - l.heldBack
	l.heldBack = n
	e.m.blocked.Set(float64(len(e.held)))
}

// read feeds pending outbox entries into lanes, keeping a bounded window
// in memory.
func (e *Engine) read() {
	defer e.workers.Done()
	refresh := time.NewTicker(refreshEvery)
	defer refresh.Stop()
	var after uint64
	rescanned := false
	for {
		// Under steady load the loop below never waits: check the
		// held-back keys here too.
		select {
		case <-refresh.C:
			e.refreshBlockers()
			rescanned = false
		default:
		}
		changed := e.store.Changed(e.name)
		e.mu.Lock()
		active := len(e.known) - e.heldBack
		room := readWindow - active
		// Read in large steps: topping the window up after every
		// completion would cost a read transaction per delivery.
		full := (active > 0 && room < readWindow/4) || len(e.known) >= heldLimit
		wake := e.wake
		e.mu.Unlock()
		if full {
			select {
			case <-e.stop:
				return
			case <-wake:
			case <-refresh.C:
				e.refreshBlockers()
			}
			continue
		}
		es, err := e.store.Pending(e.name, after, room)
		if err != nil {
			e.log.Error("delivery cannot read the outbox; retrying", "error", err)
			select {
			case <-e.stop:
				return
			case <-time.After(storeRetryWait):
			}
			continue
		}
		if len(es) == 0 {
			// A replayed exception re-pends an entry behind the read
			// position: when the outbox holds more pending entries than
			// the engine knows, read again from the start.
			if after > 0 && !rescanned && e.store.Depth(e.name) > e.heldCount() {
				after, rescanned = 0, true
				continue
			}
			select {
			case <-e.stop:
				return
			case <-changed:
			case <-refresh.C:
				e.refreshBlockers()
			}
			rescanned = false
			continue
		}
		after = es[len(es)-1].Seq
		e.add(es)
	}
}

func (e *Engine) heldCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.known)
}

// add puts entries into their lanes in Seq order.
func (e *Engine) add(es []outbox.Entry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, en := range es {
		if _, ok := e.known[en.Seq]; ok {
			continue
		}
		it := &item{e: en, marked: e.marks[en.Seq], uncertain: e.marks[en.Seq]}
		e.known[en.Seq] = it
		if !it.marked {
			e.unmarked = append(e.unmarked, it)
		}
		l := e.laneFor(laneKey(en))
		// A parked entry back in the outbox (replayed) goes first again.
		delete(l.blockers, en.Seq)
		i := sort.Search(len(l.items), func(i int) bool { return l.items[i].e.Seq > en.Seq })
		if i == 0 && l.busy {
			i = 1 // never in front of the entry being attempted
		}
		l.items = append(l.items, nil)
		copy(l.items[i+1:], l.items[i:])
		l.items[i] = it
		e.tidy(l)
		e.enqueue(l)
	}
}

// refreshBlockers releases keys whose parked entry's exception was
// resolved without a replay (a replay brings the entry back itself).
func (e *Engine) refreshBlockers() {
	if e.parked == nil {
		return
	}
	// Only blockers already recorded in the outbox are candidates: their
	// exception existed before the list below is read.
	e.mu.Lock()
	cands := map[uint64]*lane{}
	for l := range e.held {
		for s := range l.blockers {
			if _, inMemory := e.known[s]; !inMemory {
				cands[s] = l
			}
		}
	}
	e.mu.Unlock()
	if len(cands) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(e.callCtx, e.cfg.Timeout)
	open, err := e.parked(ctx, e.name)
	cancel()
	if err != nil {
		e.log.Warn("delivery cannot list parked entries; held-back keys stay held", "error", err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for s, l := range cands {
		if open[s] || !l.blockers[s] {
			continue
		}
		delete(l.blockers, s)
		if len(l.blockers) == 0 {
			e.log.Info("ordering key released: its parked entry was resolved", "ordering_key", l.key, "seq", s)
		}
		e.tidy(l)
		e.enqueue(l)
	}
}

// work runs attempts until the engine stops.
func (e *Engine) work() {
	defer e.workers.Done()
	for {
		l, it, probe, ok := e.take()
		if !ok {
			return
		}
		e.finish(l, it, probe, e.attempt(it))
	}
}

// take waits for a lane whose next entry may go now.
func (e *Engine) take() (l *lane, it *item, probe, ok bool) {
	e.mu.Lock()
	for {
		if e.stopping {
			e.mu.Unlock()
			return nil, nil, false, false
		}
		now := time.Now()
		var wait time.Duration
		switch {
		case now.Before(e.pause):
			wait = e.pause.Sub(now)
		case len(e.ready) == 0:
		default:
			allowed, isProbe, w := e.breaker.allow(now)
			e.m.breaker.Set(float64(e.breaker.state))
			if !allowed {
				wait = w
				break
			}
			l = e.ready[0]
			e.ready[0] = nil
			e.ready = e.ready[1:]
			l.queued = false
			if l.busy || l.waiting || len(l.items) == 0 || l.blocked() {
				e.breaker.release(isProbe)
				continue
			}
			l.busy = true
			e.inflight++
			e.mu.Unlock()
			return l, l.items[0], isProbe, true
		}
		wake := e.wake
		e.mu.Unlock()
		var timer *time.Timer
		var fired <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			fired = timer.C
		}
		select {
		case <-wake:
		case <-fired:
		case <-e.stop:
		}
		if timer != nil {
			timer.Stop()
		}
		e.mu.Lock()
	}
}

// result is what one attempt came to.
type result struct {
	kind       resultKind
	ref, msg   string
	retryAfter time.Duration
	// answered: the target answered (for the breaker); false with
	// kindRetry counts as a failure.
	answered bool
	lookedUp bool
}

type resultKind int

const (
	kindDelivered resultKind = iota
	kindFailed
	kindRetry
	// kindAbandoned: the engine is stopping; the entry stays as it is.
	kindAbandoned
	// kindNoAttempt: the attempt could not start (ledger); retry without
	// counting it.
	kindNoAttempt
)

// attempt runs one attempt of it (the lane's worker owns it).
func (e *Engine) attempt(it *item) result {
	if err := e.ensureMarked(it); err != nil {
		return result{kind: kindNoAttempt, msg: err.Error()}
	}
	it.attempts++
	en := &it.e
	if it.uncertain {
		ctx, cancel := context.WithTimeout(e.callCtx, e.cfg.Timeout)
		lk, err := e.conn.Lookup(ctx, sdk.LookupRequest{IdempotencyKey: en.IdempotencyKey, Action: en.Action, Document: en.Document})
		cancel()
		switch {
		case err != nil && e.callCtx.Err() != nil:
			return result{kind: kindAbandoned}
		case err != nil:
			e.m.lookup("error")
			return result{kind: kindRetry, msg: fmt.Sprintf("lookup after an uncertain attempt: %v", err)}
		case lk.Status == sdk.LookupFound:
			e.m.lookup("found")
			return result{kind: kindDelivered, ref: lk.ExternalRef, answered: true, lookedUp: true,
				msg: "found at the target by its idempotency key after an uncertain attempt"}
		case lk.Status == sdk.LookupNotFound:
			e.m.lookup("not_found")
			it.uncertain = false
		case e.lookup:
			// The connector can look up but could not ask the target:
			// delivering now could create a second document.
			e.m.lookup("unknown")
			return result{kind: kindRetry, msg: "lookup after an uncertain attempt could not reach the target: " + lk.Message}
		default:
			// No lookup capability: the target's own idempotency handling
			// of the key is relied on.
			e.m.lookup("unknown")
		}
	}
	ctx, cancel := context.WithTimeout(e.callCtx, e.cfg.Timeout)
	start := time.Now()
	res, err := e.conn.Deliver(ctx, sdk.DeliverRequest{IdempotencyKey: en.IdempotencyKey, Action: en.Action, OrderingKey: en.OrderingKey,
		CorrelationID: en.Lineage.CorrelationID, Attempt: it.attempts, Document: en.Document})
	cancel()
	failpoint.Inject(FailpointAfterDeliver)
	e.m.attempt.Observe(time.Since(start).Seconds())
	switch {
	case err != nil && e.callCtx.Err() != nil:
		it.uncertain = true
		return result{kind: kindAbandoned}
	case err != nil:
		// The plugin could not say what happened (crash, timeout, gRPC
		// error): the target may hold the document.
		it.uncertain = true
		msg := err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			msg = fmt.Sprintf("no answer within %s (delivery.timeout): %v", e.cfg.Timeout, err)
		}
		return result{kind: kindRetry, msg: msg}
	}
	switch res.Outcome {
	case sdk.OutcomeOK:
		it.uncertain = false
		return result{kind: kindDelivered, ref: res.ExternalRef, answered: true}
	case sdk.OutcomePermanent:
		it.uncertain = res.Uncertain
		return result{kind: kindFailed, msg: res.Message, answered: true}
	case sdk.OutcomeRetryable:
		it.uncertain = it.uncertain || res.Uncertain
		return result{kind: kindRetry, msg: res.Message, retryAfter: res.RetryAfter}
	}
	it.uncertain = true
	return result{kind: kindRetry, msg: fmt.Sprintf("connector answered unknown outcome %q: %s", res.Outcome, res.Message)}
}

// ensureMarked makes sure the ledger says an attempt on it may start,
// marking a batch of the entries read since the last mark with the same
// fsync.
func (e *Engine) ensureMarked(it *item) error {
	e.markMu.Lock()
	defer e.markMu.Unlock()
	e.mu.Lock()
	if it.marked {
		e.mu.Unlock()
		return nil
	}
	batch := []*item{it}
	n := 0
	for n < len(e.unmarked) && len(batch) < markBatch {
		x := e.unmarked[n]
		n++
		if x != it && !x.marked && e.known[x.e.Seq] == x {
			batch = append(batch, x)
		}
	}
	e.unmarked = append(e.unmarked[:0], e.unmarked[n:]...)
	e.mu.Unlock()
	marks := make([]Mark, len(batch))
	for i, x := range batch {
		marks[i] = Mark{Seq: x.e.Seq, IdempotencyKey: x.e.IdempotencyKey}
	}
	if err := e.ledger.Mark(e.name, marks); err != nil {
		return fmt.Errorf("record the attempt in the delivery ledger: %w", err)
	}
	e.mu.Lock()
	for _, x := range batch {
		x.marked = true
		e.marks[x.e.Seq] = true
	}
	e.mu.Unlock()
	return nil
}

// backoff is the wait before retry n (n >= 1), with jitter.
func (e *Engine) backoff(n int) time.Duration {
	d := e.cfg.BackoffInitial
	for i := 1; i < n && d < e.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, e.cfg.BackoffMax)
	return d/2 + rand.N(d/2+1)
}

// finish applies an attempt's result to the lane and hands a final one to
// the completer.
func (e *Engine) finish(l *lane, it *item, probe bool, r result) {
	now := time.Now()
	var out *done
	e.mu.Lock()
	e.inflight--
	l.busy = false
	switch {
	case r.kind == kindAbandoned || r.kind == kindNoAttempt:
		e.breaker.release(probe)
	case r.answered:
		if e.breaker.success(probe) {
			e.log.Info("circuit breaker closed: the target answers again")
		}
	default:
		if e.breaker.failure(probe, now) {
			e.log.Warn("circuit breaker open: the target keeps failing; pausing deliveries", "for", e.cfg.Breaker.OpenFor, "last_error", r.msg)
		}
	}
	e.m.breaker.Set(float64(e.breaker.state))
	if r.kind == kindRetry && it.attempts >= e.cfg.MaxAttempts {
		noun := "attempts"
		if it.attempts == 1 {
			noun = "attempt (delivery.max_attempts is 1)"
		}
		r = result{kind: kindFailed, msg: fmt.Sprintf("gave up after %d %s; last: %s", it.attempts, noun, r.msg)}
	}
	switch r.kind {
	case kindDelivered, kindFailed:
		l.items = l.items[1:]
		state := outbox.StateDelivered
		if r.kind == kindFailed {
			state = outbox.StateFailed
			if e.parked != nil {
				l.blockers[it.e.Seq] = true
			}
		}
		// A delivered entry needs no mark; a parked one keeps it when an
		// attempt may have reached the target, so that a replay looks up
		// first.
		out = &done{it: it, forget: r.kind == kindDelivered || !it.uncertain, outcome: outbox.Outcome{Seq: it.e.Seq, State: state, ExternalRef: r.ref,
			Message: r.msg, Attempts: it.attempts, At: now}}
	case kindRetry, kindNoAttempt:
		it.lastMsg = r.msg
		if r.kind == kindRetry {
			e.m.retried.Inc()
		}
		wait := e.backoff(max(it.attempts, 1))
		if r.retryAfter > 0 {
			ra := min(r.retryAfter, maxRetryAfter)
			wait = max(wait, ra)
			// The target asked for a pause: every key waits.
			if p := now.Add(ra); p.After(e.pause) {
				e.pause = p
			}
		}
		if !e.stopping {
			l.waiting = true
			l.timer = time.AfterFunc(wait, func() {
				e.mu.Lock()
				defer e.mu.Unlock()
				l.waiting, l.timer = false, nil
				e.enqueue(l)
			})
		}
	}
	e.tidy(l)
	e.enqueue(l)
	e.signal()
	e.mu.Unlock()
	if out != nil {
		e.outcomes <- *out
	}
}

// complete records outcomes in the outbox in batches (one transaction
// each), then forgets their ledger marks.
func (e *Engine) complete() {
	defer e.completer.Done()
	for first := range e.outcomes {
		batch := []done{first}
	drain:
		for len(batch) < completeBatch {
			select {
			case d, ok := <-e.outcomes:
				if !ok {
					break drain
				}
				batch = append(batch, d)
			default:
				break drain
			}
		}
		e.record(batch)
	}
}

func (e *Engine) record(batch []done) {
	outs := make([]outbox.Outcome, len(batch))
	for i, d := range batch {
		outs[i] = d.outcome
	}
	for logged := false; ; {
		err := e.store.Complete(e.name, outs)
		if err == nil {
			break
		}
		if !logged {
			e.log.Error("delivery cannot record outcomes in the outbox; retrying (delivered entries are looked up, not sent again, should the hub stop now)", "error", err, "entries", len(outs))
			logged = true
		}
		select {
		case <-e.abort:
			return
		case <-time.After(storeRetryWait):
		}
	}
	now := time.Now()
	var forget []uint64
	e.mu.Lock()
	for _, d := range batch {
		s := d.it.e.Seq
		delete(e.known, s)
		if d.forget {
			delete(e.marks, s)
			forget = append(forget, s)
		}
		if d.outcome.State == outbox.StateDelivered {
			e.m.delivered.Inc()
			if !d.it.e.CreatedAt.IsZero() {
				e.m.latency.Observe(now.Sub(d.it.e.CreatedAt).Seconds())
			}
		} else {
			e.m.failed.Inc()
		}
	}
	e.signal()
	e.mu.Unlock()
	e.ledger.Forget(e.name, forget)
	for _, d := range batch {
		if d.outcome.State == outbox.StateFailed {
			en := &d.it.e
			e.log.Warn("delivery failed; parked as an exception (replayable), later entries of its ordering key wait for it",
				"action", en.Action, "seq", en.Seq, "ordering_key", en.OrderingKey, "idempotency_key", en.IdempotencyKey,
				"correlation_id", en.Lineage.CorrelationID, "attempts", d.outcome.Attempts, "reason", d.outcome.Message)
		}
	}
}

// Shutdown stops taking new attempts, lets attempts in flight finish
// until ctx's deadline (then cancels them: their entries stay marked and
// are looked up at the next start), records the outcomes it has, and
// returns. Idempotent, safe without Start.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.stopOnce.Do(func() {
		if !e.started {
			return
		}
		e.mu.Lock()
		e.stopping = true
		for _, l := range e.lanes {
			if l.timer != nil {
				l.timer.Stop()
			}
		}
		e.signal()
		e.mu.Unlock()
		close(e.stop)
		workersDone := make(chan struct{})
		go func() { e.workers.Wait(); close(workersDone) }()
		giveUp := func() {
			e.cancelCalls()
			// A completer stuck on a failing outbox must let go, or
			// workers waiting to hand it outcomes never end.
			e.abortOnce.Do(func() { close(e.abort) })
		}
		select {
		case <-workersDone:
		case <-ctx.Done():
			giveUp()
			<-workersDone
			e.stopErr = fmt.Errorf("delivery %s: shutdown: %w", e.name, ctx.Err())
		}
		close(e.outcomes)
		completed := make(chan struct{})
		go func() { e.completer.Wait(); close(completed) }()
		select {
		case <-completed:
		case <-ctx.Done():
			giveUp()
			<-completed
			if e.stopErr == nil {
				e.stopErr = fmt.Errorf("delivery %s: shutdown: %w", e.name, ctx.Err())
			}
		}
		e.cancelCalls()
		e.log.Info("delivery stopped")
	})
	return e.stopErr
}

// Status is an engine's state for status pages.
type Status struct {
	Destination string `json:"destination"`
	Breaker     string `json:"breaker"`
	// Held counts entries in memory: read ahead, in flight, waiting for a
	// retry, or waiting for their outcome to be recorded.
	Held     int `json:"held"`
	InFlight int `json:"in_flight"`
	// Retrying counts ordering keys whose next entry waits for a retry.
	Retrying    int          `json:"retrying"`
	PausedUntil *time.Time   `json:"paused_until,omitempty"`
	HeldBack    []HeldBack   `json:"held_back,omitempty"`
	LastErrors  []EntryError `json:"last_errors,omitempty"`
}

// HeldBack is an ordering key held back behind parked entries.
type HeldBack struct {
	OrderingKey string   `json:"ordering_key"`
	Parked      []uint64 `json:"parked"`
	Waiting     int      `json:"waiting"`
}

// EntryError is the last error of an entry waiting for a retry.
type EntryError struct {
	Seq         uint64 `json:"seq"`
	OrderingKey string `json:"ordering_key"`
	Attempts    int    `json:"attempts"`
	Error       string `json:"error"`
}

// statusListLimit bounds the lists in Status.
const statusListLimit = 20

// Status reports the engine's state.
func (e *Engine) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := Status{Destination: e.name, Breaker: e.breaker.state.String(), Held: len(e.known), InFlight: e.inflight}
	if time.Now().Before(e.pause) {
		p := e.pause
		s.PausedUntil = &p
	}
	for _, l := range e.lanes {
		if l.waiting {
			s.Retrying++
			if len(s.LastErrors) < statusListLimit && len(l.items) > 0 {
				it := l.items[0]
				s.LastErrors = append(s.LastErrors, EntryError{Seq: it.e.Seq, OrderingKey: it.e.OrderingKey, Attempts: it.attempts, Error: it.lastMsg})
			}
		}
	}
	for l := range e.held {
		if len(s.HeldBack) >= statusListLimit {
			break
		}
		hb := HeldBack{OrderingKey: l.key, Waiting: len(l.items)}
		for seq := range l.blockers {
			hb.Parked = append(hb.Parked, seq)
		}
		sort.Slice(hb.Parked, func(i, j int) bool { return hb.Parked[i] < hb.Parked[j] })
		s.HeldBack = append(s.HeldBack, hb)
	}
	sort.Slice(s.HeldBack, func(i, j int) bool { return s.HeldBack[i].OrderingKey < s.HeldBack[j].OrderingKey })
	sort.Slice(s.LastErrors, func(i, j int) bool { return s.LastErrors[i].Seq < s.LastErrors[j].Seq })
	return s
}
