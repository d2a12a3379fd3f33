package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/hub/pipedb"
	"github.com/plantsync/plantsync/plugins/sdk"
	"github.com/plantsync/plantsync/plugins/sdk/sdktest"
)

// The test binary doubles as a connector plugin binary (sdktest.SelfPlugin)
// for the tests that run the engine against a real plugin process.
func TestMain(m *testing.M) {
	if sdktest.RunPluginRole(map[string]func(){
		"files": func() { sdk.ServeDestination(&fileConnector{}) },
	}) {
		return
	}
	goleak.VerifyTestMain(m)
}

const dest = "erp"

// store is a real outbox (bbolt, fsync) in a temp folder. A failed entry
// is parked in parked, as the pipeline parks it as an exception.
type store struct {
	t  testing.TB
	db *pipedb.DB
	ob *outbox.Bolt

	mu     sync.Mutex
	parked map[uint64]bool
}

func newStore(t testing.TB, dir string) *store {
	t.Helper()
	db, err := pipedb.Open(filepath.Join(dir, "pipeline.db"))
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.OpenBolt(db, []string{dest})
	if err != nil {
		t.Fatal(err)
	}
	s := &store{t: t, db: db, ob: ob, parked: map[uint64]bool{}}
	ob.OnFailed = func(_ *bolt.Tx, e *outbox.Entry) error {
		s.mu.Lock()
		s.parked[e.Seq] = true
		s.mu.Unlock()
		return nil
	}
	t.Cleanup(func() { _ = db.Close() })
	return s
}

// doc is the test documents' content: N numbers the entries of a test.
type doc struct {
	N int    `json:"n"`
	K string `json:"k"`
}

// add appends entries: one per (key, n) in order.
func (s *store) add(keys []string, perKey int) {
	s.t.Helper()
	var es []outbox.Entry
	n := 0
	for i := range perKey {
		for _, k := range keys {
			n++
			raw, _ := json.Marshal(doc{N: i, K: k})
			es = append(es, outbox.Entry{Destination: dest, IdempotencyKey: fmt.Sprintf("idem-%s-%d", k, i), Action: "thing.create",
				OrderingKey: k, Document: raw, CreatedAt: time.Now(), State: outbox.StatePending,
				Lineage: outbox.Lineage{EventID: fmt.Sprintf("ev-%d", n), CorrelationID: fmt.Sprintf("corr-%d", n)}})
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		app := s.ob.NewAppender(tx)
		for i := range es {
			v, err := outbox.Encode(&es[i])
			if err != nil {
				return err
			}
			if _, err := app.Append(dest, v); err != nil {
				return err
			}
		}
		return app.Flush()
	})
	if err != nil {
		s.t.Fatal(err)
	}
}

// replay puts a failed entry back, as the pipeline's replay does.
func (s *store) replay(seq uint64) {
	s.t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error {
		e, err := s.ob.GetTx(tx, dest, seq)
		if err != nil {
			return err
		}
		e.State, e.Message, e.CompletedAt = outbox.StatePending, "", nil
		return s.ob.PutTx(tx, &e)
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	delete(s.parked, seq)
	s.mu.Unlock()
}

// resolve resolves a parked entry's exception without a replay.
func (s *store) resolve(seq uint64) {
	s.mu.Lock()
	delete(s.parked, seq)
	s.mu.Unlock()
}

func (s *store) parkedFunc(context.Context, string) (map[uint64]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[uint64]bool{}
	for k := range s.parked {
		out[k] = true
	}
	return out, nil
}

func (s *store) entries(state outbox.State) []outbox.Entry {
	s.t.Helper()
	es, err := s.ob.List(outbox.Query{Destination: dest, State: state, Ascending: true, Limit: 1 << 20})
	if err != nil {
		s.t.Fatal(err)
	}
	return es
}

// step is what one scripted Deliver does.
type step struct {
	apply bool                // create the document at the target first
	res   sdk.DeliverResponse // the answer, when err is nil
	err   error
}

// target is an in-process connector over a target that does NOT deduplicate:
// every Deliver that applies creates a document, so a second creation for a
// key shows as created[key] == 2. Lookup finds created documents.
type target struct {
	delay time.Duration
	// script decides an attempt; nil or a nil step: apply and answer ok.
	script func(req sdk.DeliverRequest) *step

	mu           sync.Mutex
	created      map[string]int
	order        map[string][]int // ordering key → doc.N in creation order
	busyKey      map[string]int
	maxBusyKey   int
	busy, maxAll int
	deliveries   int
	lookups      int
	attemptsAt   []time.Time
}

func newTarget() *target {
	return &target{created: map[string]int{}, order: map[string][]int{}, busyKey: map[string]int{}}
}

func (t *target) Deliver(ctx context.Context, req sdk.DeliverRequest) (sdk.DeliverResponse, error) {
	t.mu.Lock()
	t.deliveries++
	t.attemptsAt = append(t.attemptsAt, time.Now())
	t.busy++
	t.busyKey[req.OrderingKey]++
	t.maxAll = max(t.maxAll, t.busy)
	t.maxBusyKey = max(t.maxBusyKey, t.busyKey[req.OrderingKey])
	script := t.script
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.busy--
		t.busyKey[req.OrderingKey]--
		t.mu.Unlock()
	}()
	if t.delay > 0 {
		select {
		case <-time.After(t.delay):
		case <-ctx.Done():
			return sdk.DeliverResponse{}, ctx.Err()
		}
	}
	st := &step{apply: true, res: sdk.OK("")}
	if script != nil {
		if s := script(req); s != nil {
			st = s
		}
	}
	if st.apply {
		var d doc
		_ = json.Unmarshal(req.Document, &d)
		t.mu.Lock()
		t.created[req.IdempotencyKey]++
		t.order[req.OrderingKey] = append(t.order[req.OrderingKey], d.N)
		t.mu.Unlock()
	}
	if st.err != nil {
		return sdk.DeliverResponse{}, st.err
	}
	if st.res.Outcome == sdk.OutcomeOK && st.res.ExternalRef == "" {
		st.res.ExternalRef = "DOC-" + req.IdempotencyKey
	}
	return st.res, nil
}

func (t *target) Lookup(_ context.Context, req sdk.LookupRequest) (sdk.LookupResponse, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lookups++
	if t.created[req.IdempotencyKey] > 0 {
		return sdk.LookupResponse{Status: sdk.LookupFound, ExternalRef: "DOC-" + req.IdempotencyKey}, nil
	}
	return sdk.LookupResponse{Status: sdk.LookupNotFound}, nil
}

func (t *target) setScript(f func(req sdk.DeliverRequest) *step) {
	t.mu.Lock()
	t.script = f
	t.mu.Unlock()
}

// stats returns a consistent copy of the counters.
func (t *target) stats() (deliveries, lookups int, created map[string]int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	created = map[string]int{}
	for k, v := range t.created {
		created[k] = v
	}
	return t.deliveries, t.lookups, created
}

// testConfig is fast: short backoff, breaker effectively off.
func testConfig() Config {
	return Config{MaxAttempts: 10, BackoffInitial: 5 * time.Millisecond, BackoffMax: 40 * time.Millisecond, Timeout: 5 * time.Second,
		Concurrency: 4, Breaker: BreakerConfig{Failures: 10000, OpenFor: time.Second}}
}

type rig struct {
	t      testing.TB
	dir    string
	store  *store
	ledger *Ledger
	m      *Metrics
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, dir: t.TempDir()}
	r.store = newStore(t, r.dir)
	r.openLedger()
	return r
}

func (r *rig) openLedger() {
	r.t.Helper()
	l, err := OpenLedger(filepath.Join(r.dir, "delivery.db"))
	if err != nil {
		r.t.Fatal(err)
	}
	r.ledger = l
	r.t.Cleanup(func() { _ = l.Close() })
}

// start runs an engine over the rig's outbox; it stops with the test.
func (r *rig) start(conn Connector, cfg Config, canLookup bool) *Engine {
	r.t.Helper()
	if r.m == nil {
		var err error
		if r.m, err = NewMetrics(promRegistry()); err != nil {
			r.t.Fatal(err)
		}
	}
	e, err := New(Options{Destination: dest, Config: cfg, Outbox: r.store.ob, Connector: conn, CanLookup: canLookup, Ledger: r.ledger,
		Parked: r.store.parkedFunc, Metrics: r.m, Logger: testLogger(r.t)})
	if err != nil {
		r.t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { stopEngine(r.t, e) })
	return e
}

func stopEngine(t testing.TB, e *Engine) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// waitFor polls cond with a deadline.
func waitFor(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", within, what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitDelivered waits until n entries are delivered and none is pending.
func (r *rig) waitDelivered(n int) {
	r.t.Helper()
	waitFor(r.t, 20*time.Second, fmt.Sprintf("%d entries delivered", n), func() error {
		got := len(r.store.entries(outbox.StateDelivered))
		if got != n || r.store.ob.Depth(dest) != 0 {
			return fmt.Errorf("%d delivered, %d pending", got, r.store.ob.Depth(dest))
		}
		return nil
	})
}
