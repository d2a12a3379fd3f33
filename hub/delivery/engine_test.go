package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/internal/syncbuf"
	"github.com/plantsync/plantsync/plugins/sdk"
)

func promRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// value reads a counter or gauge.
func value(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func testLogger(t testing.TB) *slog.Logger {
	buf := &syncbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Entries of one ordering key reach the target in outbox order, one at a
// time; different keys go in parallel up to the configured concurrency.
func TestOrderWithinKeyParallelAcrossKeys(t *testing.T) {
	r := newRig(t)
	keys := []string{"PO-1", "PO-2", "PO-3", "PO-4", "PO-5", "PO-6", "PO-7", "PO-8"}
	const perKey = 30
	r.store.add(keys, perKey)
	tg := newTarget()
	tg.delay = 2 * time.Millisecond
	cfg := testConfig()
	cfg.Concurrency = 4
	r.start(tg, cfg, true)
	r.waitDelivered(len(keys) * perKey)

	tg.mu.Lock()
	defer tg.mu.Unlock()
	for _, k := range keys {
		want := make([]int, perKey)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(tg.order[k], want) {
			t.Errorf("key %s reached the target in order %v; want %v", k, tg.order[k], want)
		}
	}
	if tg.maxBusyKey != 1 {
		t.Errorf("%d attempts of one key ran at the same time; want 1", tg.maxBusyKey)
	}
	if tg.maxAll < 2 || tg.maxAll > cfg.Concurrency {
		t.Errorf("at most %d attempts ran at the same time; want 2 to %d (parallel keys, bounded)", tg.maxAll, cfg.Concurrency)
	}
	for k, n := range tg.created {
		if n != 1 {
			t.Errorf("%s created %d times", k, n)
		}
	}
	for _, e := range r.store.entries(outbox.StateDelivered) {
		if e.ExternalRef != "DOC-"+e.IdempotencyKey || e.Attempts != 1 {
			t.Fatalf("entry %d: ref %q attempts %d", e.Seq, e.ExternalRef, e.Attempts)
		}
	}
	if got := value(t, r.m.delivered.WithLabelValues(dest)); got != float64(len(keys)*perKey) {
		t.Errorf("delivered_total %v", got)
	}
}

// A target failing N times then succeeding: the entry is retried with
// backoff, its key waits, other keys flow, and it is delivered once.
func TestRetryThenSuccess(t *testing.T) {
	r := newRig(t)
	r.store.add([]string{"A", "B"}, 3)
	tg := newTarget()
	const failures = 4
	var mu sync.Mutex
	failed := 0
	tg.setScript(func(req sdk.DeliverRequest) *step {
		if req.IdempotencyKey != "idem-A-0" {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if failed < failures {
			failed++
			// A 503: refused before acting, certain.
			return &step{res: sdk.Retryable(0, "HTTP 503: busy")}
		}
		return nil
	})
	r.start(tg, testConfig(), true)
	r.waitDelivered(6)
	deliveries, lookups, created := tg.stats()
	if deliveries != 6+failures || lookups != 0 {
		t.Errorf("%d deliveries and %d lookups; want %d and 0 (certain refusals need no lookup)", deliveries, lookups, 6+failures)
	}
	for k, n := range created {
		if n != 1 {
			t.Errorf("%s created %d times", k, n)
		}
	}
	tg.mu.Lock()
	if !slices.Equal(tg.order["A"], []int{0, 1, 2}) {
		t.Errorf("key A in order %v", tg.order["A"])
	}
	tg.mu.Unlock()
	e := r.store.entries(outbox.StateDelivered)[0]
	if e.IdempotencyKey != "idem-A-0" || e.Attempts != failures+1 {
		t.Errorf("first entry %s attempts %d; want %d", e.IdempotencyKey, e.Attempts, failures+1)
	}
	if got := value(t, r.m.retried.WithLabelValues(dest)); got != failures {
		t.Errorf("retried_total %v; want %d", got, failures)
	}
}

// Retry-After holds the destination at least that long.
func TestRetryAfterHonoured(t *testing.T) {
	r := newRig(t)
	r.store.add([]string{"A"}, 1)
	tg := newTarget()
	const after = 300 * time.Millisecond
	first := true
	tg.setScript(func(sdk.DeliverRequest) *step {
		if first {
			first = false
			return &step{res: sdk.Retryable(after, "HTTP 429: slow down")}
		}
		return nil
	})
	r.start(tg, testConfig(), true)
	r.waitDelivered(1)
	tg.mu.Lock()
	defer tg.mu.Unlock()
	if len(tg.attemptsAt) != 2 {
		t.Fatalf("%d attempts", len(tg.attemptsAt))
	}
	if gap := tg.attemptsAt[1].Sub(tg.attemptsAt[0]); gap < after {
		t.Errorf("retried after %s; the target asked for %s", gap, after)
	}
}

// An attempt whose outcome is unknown (the target created the document,
// then the call failed) is followed by a Lookup, which finds it: no second
// document. An uncertain attempt that did not create one is delivered
// again after the Lookup says so.
func TestUncertainAttemptIsLookedUpBeforeDeliveringAgain(t *testing.T) {
	r := newRig(t)
	r.store.add([]string{"A", "B"}, 1)
	tg := newTarget()
	seen := map[string]bool{}
	var mu sync.Mutex
	tg.setScript(func(req sdk.DeliverRequest) *step {
		mu.Lock()
		defer mu.Unlock()
		if seen[req.IdempotencyKey] {
			return nil
		}
		seen[req.IdempotencyKey] = true
		if req.IdempotencyKey == "idem-A-0" {
			return &step{apply: true, err: errors.New("rpc error: code = Unavailable desc = connection reset")}
		}
		res := sdk.Retryable(0, "HTTP 504: gateway timeout")
		res.Uncertain = true
		return &step{res: res}
	})
	r.start(tg, testConfig(), true)
	r.waitDelivered(2)
	deliveries, lookups, created := tg.stats()
	if created["idem-A-0"] != 1 || created["idem-B-0"] != 1 {
		t.Fatalf("created %v; want one document per key", created)
	}
	// A: deliver (created, error), lookup (found). B: deliver (504), lookup
	// (not found), deliver.
	if deliveries != 3 || lookups != 2 {
		t.Errorf("%d deliveries, %d lookups; want 3 and 2", deliveries, lookups)
	}
	for _, e := range r.store.entries(outbox.StateDelivered) {
		if e.ExternalRef != "DOC-"+e.IdempotencyKey {
			t.Errorf("entry %s ref %q", e.IdempotencyKey, e.ExternalRef)
		}
	}
}

// A connector that can look up but whose lookup cannot reach the target
// answers unknown: the engine waits instead of risking a second document.
func TestLookupUnknownWaitsWhenTheConnectorCanLookUp(t *testing.T) {
	r := newRig(t)
	r.store.add([]string{"A"}, 1)
	tg := &unknownLookup{target: newTarget()}
	tg.setScript(func(sdk.DeliverRequest) *step {
		return &step{apply: true, err: errors.New("plugin unavailable")}
	})
	cfg := testConfig()
	cfg.MaxAttempts = 4
	r.start(tg, cfg, true)
	waitFor(t, 10*time.Second, "entry parked", func() error {
		if n := len(r.store.entries(outbox.StateFailed)); n != 1 {
			return fmt.Errorf("%d failed", n)
		}
		return nil
	})
	deliveries, _, created := tg.stats()
	if deliveries != 1 || created["idem-A-0"] != 1 {
		t.Errorf("%d deliveries, created %v; want the one uncertain delivery only", deliveries, created)
	}
	e := r.store.entries(outbox.StateFailed)[0]
	if !strings.Contains(e.Message, "gave up after 4 attempts") || !strings.Contains(e.Message, "could not reach the target") {
		t.Errorf("message %q", e.Message)
	}
}

type unknownLookup struct{ *target }

func (u *unknownLookup) Lookup(context.Context, sdk.LookupRequest) (sdk.LookupResponse, error) {
	return sdk.LookupResponse{Status: sdk.LookupUnknown, Message: "GET: connection refused"}, nil
}

// A permanent refusal parks the entry (an exception) and holds back the
// later entries of its key, while other keys flow. A replay delivers it
// once, then the held-back entries in order; replaying again does nothing.
func TestPermanentParksHoldsKeyReplayDeliversOnce(t *testing.T) {
	r := newRig(t)
	r.store.add([]string{"BAD", "OK"}, 3)
	tg := newTarget()
	var mu sync.Mutex
	fixed := false
	tg.setScript(func(req sdk.DeliverRequest) *step {
		mu.Lock()
		defer mu.Unlock()
		if req.IdempotencyKey == "idem-BAD-0" && !fixed {
			return &step{res: sdk.Permanent("unknown product 200201")}
		}
		return nil
	})
	e := r.start(tg, testConfig(), true)
	waitFor(t, 10*time.Second, "BAD-0 parked, OK delivered", func() error {
		if f, d := len(r.store.entries(outbox.StateFailed)), len(r.store.entries(outbox.StateDelivered)); f != 1 || d != 3 {
			return fmt.Errorf("%d failed, %d delivered", f, d)
		}
		return nil
	})
	failed := r.store.entries(outbox.StateFailed)[0]
	if failed.IdempotencyKey != "idem-BAD-0" || failed.Message != "unknown product 200201" || failed.Attempts != 1 {
		t.Fatalf("failed entry %+v", failed)
	}
	waitFor(t, 5*time.Second, "status shows the held-back key", func() error {
		st := e.Status()
		if len(st.HeldBack) != 1 || st.HeldBack[0].OrderingKey != "BAD" || st.HeldBack[0].Waiting != 2 || !slices.Equal(st.HeldBack[0].Parked, []uint64{failed.Seq}) {
			return fmt.Errorf("%+v", st.HeldBack)
		}
		return nil
	})
	// BAD-1 and BAD-2 wait: nothing of key BAD reached the target.
	time.Sleep(50 * time.Millisecond)
	tg.mu.Lock()
	if len(tg.order["BAD"]) != 0 {
		t.Fatalf("key BAD delivered %v behind a parked entry", tg.order["BAD"])
	}
	tg.mu.Unlock()
	if got := value(t, r.m.blocked.WithLabelValues(dest)); got != 1 {
		t.Errorf("blocked_keys %v", got)
	}

	mu.Lock()
	fixed = true
	mu.Unlock()
	r.store.replay(failed.Seq)
	r.waitDelivered(6)
	_, _, created := tg.stats()
	for k, n := range created {
		if n != 1 {
			t.Errorf("%s created %d times", k, n)
		}
	}
	tg.mu.Lock()
	if !slices.Equal(tg.order["BAD"], []int{0, 1, 2}) {
		t.Errorf("key BAD in order %v; want [0 1 2]", tg.order["BAD"])
	}
	tg.mu.Unlock()
	if got := value(t, r.m.failed.WithLabelValues(dest)); got != 1 {
		t.Errorf("failed_total %v", got)
	}
	if st := e.Status(); len(st.HeldBack) != 0 {
		t.Errorf("still held back: %+v", st.HeldBack)
	}
}

// An exception resolved without a replay (discarded) releases its key.
func TestResolvedExceptionReleasesKey(t *testing.T) {
	r := newRig(t)
	r.store.add([]string{"BAD"}, 2)
	tg := newTarget()
	tg.setScript(func(req sdk.DeliverRequest) *step {
		if req.IdempotencyKey == "idem-BAD-0" {
			return &step{res: sdk.Permanent("refused")}
		}
		return nil
	})
	e := r.start(tg, testConfig(), true)
	waitFor(t, 10*time.Second, "BAD-0 parked", func() error {
		if len(e.Status().HeldBack) != 1 || len(r.store.entries(outbox.StateFailed)) != 1 {
			return errors.New("not parked yet")
		}
		return nil
	})
	r.store.resolve(r.store.entries(outbox.StateFailed)[0].Seq)
	e.refreshBlockers() // the engine does this every few seconds
	waitFor(t, 10*time.Second, "BAD-1 delivered", func() error {
		if n := len(r.store.entries(outbox.StateDelivered)); n != 1 {
			return fmt.Errorf("%d delivered", n)
		}
		return nil
	})
}

// Retries are bounded: exhausted, the entry is parked with the last error.
func TestExhaustedRetriesPark(t *testing.T) {
	r := newRig(t)
	r.store.add([]string{"A"}, 1)
	tg := newTarget()
	tg.setScript(func(sdk.DeliverRequest) *step { return &step{res: sdk.Retryable(0, "HTTP 502: bad gateway")} })
	cfg := testConfig()
	cfg.MaxAttempts = 3
	r.start(tg, cfg, true)
	waitFor(t, 10*time.Second, "entry parked", func() error {
		if n := len(r.store.entries(outbox.StateFailed)); n != 1 {
			return fmt.Errorf("%d failed", n)
		}
		return nil
	})
	e := r.store.entries(outbox.StateFailed)[0]
	if e.Attempts != 3 || e.Message != "gave up after 3 attempts; last: HTTP 502: bad gateway" {
		t.Errorf("attempts %d, message %q", e.Attempts, e.Message)
	}
}

// The breaker opens after failures in a row, stops the attempts while
// open (only probes get through), and closes when the target answers.
func TestBreakerOpensAndRecovers(t *testing.T) {
	r := newRig(t)
	keys := []string{"A", "B", "C", "D", "E", "F"}
	r.store.add(keys, 2)
	tg := newTarget()
	var mu sync.Mutex
	down := true
	tg.setScript(func(sdk.DeliverRequest) *step {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return &step{res: sdk.Retryable(0, "connection refused")}
		}
		return nil
	})
	cfg := testConfig()
	cfg.MaxAttempts = 1000
	cfg.BackoffInitial, cfg.BackoffMax = time.Millisecond, 2*time.Millisecond
	cfg.Breaker = BreakerConfig{Failures: 3, OpenFor: 150 * time.Millisecond}
	e := r.start(tg, cfg, true)
	waitFor(t, 5*time.Second, "breaker open", func() error {
		if s := e.Status().Breaker; s != "open" {
			return fmt.Errorf("breaker %s", s)
		}
		return nil
	})
	if got := value(t, r.m.breaker.WithLabelValues(dest)); got != float64(BreakerOpen) {
		t.Errorf("breaker_state %v", got)
	}
	before, _, _ := tg.stats()
	const window = 600 * time.Millisecond
	time.Sleep(window)
	after, _, _ := tg.stats()
	// Without the breaker, 4 workers retrying every 1-2 ms would make
	// hundreds of attempts; open, only one probe per open_for gets through.
	if probes, most := after-before, int(window/cfg.Breaker.OpenFor)+2; probes > most {
		t.Errorf("%d attempts in %s while the breaker was open; want at most %d probes", probes, window, most)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	r.waitDelivered(len(keys) * 2)
	if s := e.Status().Breaker; s != "closed" {
		t.Errorf("breaker %s after recovery", s)
	}
	if got := value(t, r.m.breaker.WithLabelValues(dest)); got != float64(BreakerClosed) {
		t.Errorf("breaker_state %v after recovery", got)
	}
	if n := len(r.store.entries(outbox.StateFailed)); n != 0 {
		t.Errorf("%d entries parked; an open breaker must not use up attempts", n)
	}
}

// The hub stopped while a delivery was in flight (it reached the target,
// its outcome was never recorded): the next run finds the entry marked in
// the ledger, looks it up, and records it without a second document.
func TestRestartLooksUpMarkedEntries(t *testing.T) {
	r := newRig(t)
	r.store.add([]string{"A"}, 3)
	tg := newTarget()
	hang := &hangAfterApply{target: tg, key: "idem-A-1", hung: make(chan struct{})}
	e1, err := New(Options{Destination: dest, Config: testConfig(), Outbox: r.store.ob, Connector: hang, CanLookup: true,
		Ledger: r.ledger, Parked: r.store.parkedFunc, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-hang.hung
	// Shutdown's deadline passes with the delivery in flight: the call is
	// cancelled and nothing is recorded for it.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := e1.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("shutdown: %v; want the deadline exceeded", err)
	}
	cancel()
	if got := len(r.store.entries(outbox.StatePending)); got != 2 {
		t.Fatalf("%d pending after the stop; want A-1 and A-2", got)
	}
	// A new process: a fresh ledger handle on the same file.
	if err := r.ledger.Close(); err != nil {
		t.Fatal(err)
	}
	r.openLedger()
	if marks, _ := r.ledger.Marks(dest); !slices.Contains(marks, r.store.entries(outbox.StatePending)[0].Seq) {
		t.Fatalf("ledger marks %v lack the entry in flight", marks)
	}
	r.start(tg, testConfig(), true)
	r.waitDelivered(3)
	deliveries, lookups, created := tg.stats()
	if created["idem-A-1"] != 1 || created["idem-A-0"] != 1 || created["idem-A-2"] != 1 {
		t.Errorf("created %v; want one document per key", created)
	}
	// A-1 was looked up (found) instead of delivered again; A-2, marked
	// ahead, was looked up (not found) and delivered.
	if deliveries != 3 || lookups != 2 {
		t.Errorf("%d deliveries, %d lookups; want 3 and 2", deliveries, lookups)
	}
	waitFor(t, 5*time.Second, "ledger marks forgotten", func() error {
		if err := r.ledger.Flush(); err != nil {
			return err
		}
		if m, _ := r.ledger.Marks(dest); len(m) != 0 {
			return fmt.Errorf("marks %v", m)
		}
		return nil
	})
}

// hangAfterApply lets target apply key's delivery, then holds the call
// until the context ends (a hub stopped mid-delivery).
type hangAfterApply struct {
	*target
	key  string
	hung chan struct{}
	once sync.Once
}

func (h *hangAfterApply) Deliver(ctx context.Context, req sdk.DeliverRequest) (sdk.DeliverResponse, error) {
	res, err := h.target.Deliver(ctx, req)
	if req.IdempotencyKey == h.key {
		h.once.Do(func() { close(h.hung) })
		<-ctx.Done()
		return sdk.DeliverResponse{}, ctx.Err()
	}
	return res, err
}

// Config sections: defaults fill zero fields; Validate names fields.
func TestConfigDefaultsAndValidate(t *testing.T) {
	d := Config{}.WithDefaults()
	if d != NewDefaultConfig() {
		t.Errorf("defaults %+v", d)
	}
	if errs := (Config{}).Validate("d"); len(errs) != 0 {
		t.Errorf("zero config refused: %v", errs)
	}
	errs := Config{MaxAttempts: -1, BackoffInitial: 2 * time.Second, BackoffMax: time.Second, Timeout: 2 * time.Hour, Concurrency: 2000,
		Breaker: BreakerConfig{Failures: -1, OpenFor: time.Microsecond}}.Validate("destinations[0].delivery")
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	for _, want := range []string{"destinations[0].delivery.max_attempts: -1", "destinations[0].delivery.backoff_max: 1s is below backoff_initial 2s",
		"destinations[0].delivery.timeout: 2h0m0s", "destinations[0].delivery.concurrency: 2000", "destinations[0].delivery.breaker.failures: -1",
		"destinations[0].delivery.breaker.open_for: 1µs"} {
		if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("no problem %q in %q", want, got)
		}
	}
	if len(errs) != 6 {
		t.Errorf("%d problems: %q", len(errs), got)
	}
	if _, err := New(Options{Destination: dest}); !errors.Is(err, ErrOptions) {
		t.Errorf("New without outbox: %v", err)
	}
}

// The backoff doubles up to its cap, with jitter between half and all.
func TestBackoff(t *testing.T) {
	e := &Engine{cfg: Config{BackoffInitial: 100 * time.Millisecond, BackoffMax: time.Second}}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 40: time.Second} {
		for range 50 {
			if d := e.backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %s; want %s to %s", n, d, want/2, want)
			}
		}
	}
}
