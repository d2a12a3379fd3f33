package pipeline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/alerts"
	"github.com/plantsync/plantsync/hub/approvals"
	"github.com/plantsync/plantsync/hub/crosswalk"
	"github.com/plantsync/plantsync/hub/exceptions"
	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/hub/pipedb"
	"github.com/plantsync/plantsync/hub/schema"
	"github.com/plantsync/plantsync/internal/boltkv"
)

// ErrConfig marks a pipeline config that does not compile.
var ErrConfig = errors.New("invalid pipeline config")

// Options configure New.
type Options struct {
	Config Config
	// Dir holds pipeline.db and crosswalks.db (the hub's storage.dir).
	Dir     string
	Journal journal.Journal
	// Destinations are the configured destinations; the built-in alerts
	// destination is added when missing.
	Destinations []Destination
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
	// Retention bounds the finished work the pipeline's file keeps.
	Retention Retention
	// Now is the clock (tests move it).
	Now func() time.Time
}

// Pipeline is the running pipeline with its stores.
type Pipeline struct {
	opts    Options
	log     *slog.Logger
	plan    *plan
	journal journal.Journal
	// readTail reads the journal: ReadDecoded where the journal offers it.
	readTail func(after uint64, limit int) ([]journal.Record, error)
	now      func() time.Time
	dests    map[string]Destination

	db         *pipedb.DB
	outbox     *outbox.Bolt
	exceptions *exceptions.Bolt
	approvals  *approvals.Bolt
	alerts     *alerts.Bolt
	crosswalks *crosswalk.Store
	m          *metrics

	cursor   atomic.Uint64
	degraded atomic.Pointer[string]

	// unreadable holds the records pruning reported it cannot read.
	pruneMu    sync.Mutex
	unreadable map[string]bool

	startOnce sync.Once
	stopOnce  sync.Once
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	stopErr   error
}

var (
	bucketTrace = []byte("trace")
	keyCursor   = []byte("cursor")
)

// TableSpecs lists the crosswalk tables of the destinations.
func TableSpecs(dests []Destination) []crosswalk.Spec {
	var names []string
	for _, d := range dests {
		if d.Name != alerts.Destination {
			names = append(names, d.Name)
		}
	}
	sort.Strings(names)
	return crosswalk.Specs(names)
}

func withAlerts(dests []Destination) []Destination {
	for _, d := range dests {
		if d.Name == alerts.Destination {
			return dests
		}
	}
	return append(append([]Destination(nil), dests...), Destination{Name: alerts.Destination, Type: "alerts", Actions: []string{alerts.Action}})
}

// New compiles the config, opens the stores in opts.Dir and seeds the
// crosswalk tables from their CSV files.
func New(opts Options) (*Pipeline, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	opts.Destinations = withAlerts(opts.Destinations)
	plan, errs := compile(&opts.Config, opts.Destinations, schema.New())
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	p := &Pipeline{opts: opts, log: opts.Logger, plan: plan, journal: opts.Journal, readTail: opts.Journal.Read, now: opts.Now, dests: map[string]Destination{}}
	if tr, ok := opts.Journal.(journal.TailReader); ok {
		p.readTail = tr.ReadDecoded
	}
	var names []string
	for _, d := range opts.Destinations {
		p.dests[d.Name] = d
		names = append(names, d.Name)
	}
	ok := false
	defer func() {
		if !ok {
			p.closeStores()
		}
	}()
	var err error
	if p.crosswalks, err = crosswalk.Open(crosswalk.Options{Path: filepath.Join(opts.Dir, "crosswalks.db"), Specs: TableSpecs(opts.Destinations),
		Logger: opts.Logger.With("component", "crosswalks"), Now: opts.Now}); err != nil {
		return nil, err
	}
	if err := p.seedCrosswalks(); err != nil {
		return nil, err
	}
	if p.db, err = pipedb.Open(filepath.Join(opts.Dir, "pipeline.db")); err != nil {
		return nil, err
	}
	if p.outbox, err = outbox.OpenBolt(p.db, names); err != nil {
		return nil, err
	}
	if p.exceptions, err = exceptions.OpenBolt(p.db); err != nil {
		return nil, err
	}
	if p.approvals, err = approvals.OpenBolt(p.db); err != nil {
		return nil, err
	}
	if p.alerts, err = alerts.OpenBolt(p.db); err != nil {
		return nil, err
	}
	p.outbox.OnFailed = p.parkDeliveryTx
	err = p.db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketTrace); err != nil {
			return err
		}
		p.cursor.Store(boltkv.GetU64(pipedb.Meta(tx), keyCursor))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open pipeline store: %w", err)
	}
	p.m = newMetrics(opts.Registerer, p)
	ok = true
	return p, nil
}

// CrosswalkFile is one configured CSV file with its table.
type CrosswalkFile struct {
	Table string
	Path  string
	Field string // config path, for errors
}

// CrosswalkFiles lists the configured CSV files, sorted by table.
func (c *Config) CrosswalkFiles() []CrosswalkFile {
	var out []CrosswalkFile
	for kind, path := range c.Crosswalks.Inbound {
		out = append(out, CrosswalkFile{Table: kind, Path: path, Field: "crosswalks.inbound." + kind})
	}
	for dest, m := range c.Crosswalks.Outbound {
		for kind, path := range m {
			out = append(out, CrosswalkFile{Table: crosswalk.OutboundTable(dest, schemaCode(kind)), Path: path, Field: "crosswalks.outbound." + dest + "." + kind})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Table < out[j].Table })
	return out
}

func schemaCode(kind string) schema.Code { return schema.Code(kind) }

// readCrosswalk parses one configured CSV file.
func readCrosswalk(f CrosswalkFile, specs []crosswalk.Spec) (spec crosswalk.Spec, rows []crosswalk.Row, hash string, err error) {
	found := false
	for _, s := range specs {
		if s.Name == f.Table {
			spec, found = s, true
		}
	}
	if !found {
		var names []string
		for _, s := range specs {
			names = append(names, s.Name)
		}
		return spec, nil, "", fmt.Errorf("%s: no table %s; inbound kinds are plant, item, unit, supplier, work_center, outbound kinds plant, item, unit, supplier, warehouse of a declared destination (tables: %v)", f.Field, f.Table, names)
	}
	raw, err := os.ReadFile(f.Path)
	if err != nil {
		return spec, nil, "", fmt.Errorf("%s: %w", f.Field, err)
	}
	rows, err = crosswalk.ReadCSV(f.Path, bytes.NewReader(raw), spec)
	if err != nil {
		return spec, nil, "", fmt.Errorf("%s: %w", f.Field, err)
	}
	sum := sha256.Sum256(raw)
	return spec, rows, hex.EncodeToString(sum[:]), nil
}

// CheckFiles reads every configured crosswalk CSV; errors name the config
// field, the file and the line.
func (c *Config) CheckFiles(prefix string, dests []Destination) []error {
	specs := TableSpecs(withAlerts(dests))
	var errs []error
	for _, f := range c.CrosswalkFiles() {
		if _, _, _, err := readCrosswalk(f, specs); err != nil {
			errs = append(errs, fmt.Errorf("%s.%w", prefix, err))
		}
	}
	return errs
}

func (p *Pipeline) seedCrosswalks() error {
	specs := p.crosswalks.Specs()
	for _, f := range p.opts.Config.CrosswalkFiles() {
		_, rows, hash, err := readCrosswalk(f, specs)
		if err != nil {
			return fmt.Errorf("pipeline.%w", err)
		}
		if _, err := p.crosswalks.Load(f.Table, f.Path, hash, rows); err != nil {
			return fmt.Errorf("pipeline.%s: %w", f.Field, err)
		}
	}
	return nil
}

// Start runs the pipeline over the journal and the built-in destinations
// (log, alerts) in the background.
func (p *Pipeline) Start(ctx context.Context) error {
	p.startOnce.Do(func() {
		ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.run(ctx)
		}()
		if p.opts.Retention.Interval > 0 {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pruneLoop(ctx)
			}()
		}
		for _, d := range p.opts.Destinations {
			switch d.Type {
			case "log", "alerts":
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					p.deliverBuiltin(ctx, d)
				}()
			}
		}
		p.log.Info("pipeline started", "cursor", p.cursor.Load(), "destinations", len(p.opts.Destinations))
	})
	return nil
}

// Shutdown stops the runner and the built-in deliveries (a batch being
// committed finishes) and closes the stores. Idempotent, safe without
// Start.
func (p *Pipeline) Shutdown(ctx context.Context) error {
	p.stopOnce.Do(func() {
		if p.cancel != nil {
			p.cancel()
			done := make(chan struct{})
			go func() { p.wg.Wait(); close(done) }()
			// The runner ends with its current transaction (one batch); the
			// stores cannot close under it. A deadline that earlier stages
			// used up still gets that grace before it counts as exceeded.
			select {
			case <-done:
			case <-ctx.Done():
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					p.stopErr = fmt.Errorf("pipeline shutdown: %w", ctx.Err())
					<-done
				}
			}
		}
		if err := p.closeStores(); err != nil && p.stopErr == nil {
			p.stopErr = err
		}
		p.log.Info("pipeline stopped", "cursor", p.cursor.Load())
	})
	return p.stopErr
}

func (p *Pipeline) closeStores() error {
	var errs []error
	if p.db != nil {
		errs = append(errs, p.db.Close())
	}
	if p.crosswalks != nil {
		errs = append(errs, p.crosswalks.Close())
	}
	return errors.Join(errs...)
}

// Status is the pipeline's state for health and the API.
type Status struct {
	Cursor   uint64 `json:"cursor"`
	Lag      uint64 `json:"lag"`
	Degraded string `json:"degraded,omitempty"`
}

// Status reports the cursor and lag behind the journal.
func (p *Pipeline) Status() Status {
	s := Status{Cursor: p.cursor.Load()}
	if last := p.journal.Stats().LastPosition; last > s.Cursor {
		s.Lag = last - s.Cursor
	}
	if d := p.degraded.Load(); d != nil {
		s.Degraded = *d
	}
	return s
}

// batch is a processed run of journal records ready to commit.
type batch struct {
	results []result
	last    uint64
}

func (p *Pipeline) run(ctx context.Context) {
	batches := make(chan batch, 1)
	go p.prepare(ctx, batches)
	for b := range batches {
		for {
			start := time.Now()
			err := p.commit(b)
			if err == nil {
				p.degraded.Store(nil)
				p.m.committed(b, time.Since(start))
				break
			}
			msg := err.Error()
			if p.degraded.Swap(&msg) == nil {
				p.log.Error("pipeline commit failing; retrying (the journal keeps the events)", "error", err, "position", b.last)
			}
			select {
			case <-ctx.Done():
				for range batches {
				}
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// prepare reads the journal after the cursor and processes batches ahead
// of the commits, so processing overlaps the fsync of the previous batch.
func (p *Pipeline) prepare(ctx context.Context, out chan<- batch) {
	defer close(out)
	next := p.cursor.Load()
	size := p.opts.Config.batchSize()
	for {
		changed := p.journal.Changed()
		recs, err := p.readTail(next, size)
		if err != nil {
			p.log.Error("pipeline cannot read the journal; retrying", "error", err, "after", next)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if len(recs) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			continue
		}
		now := p.now()
		b := batch{last: recs[len(recs)-1].Position}
		if first := recs[0].Position; first > next+1 {
			b.results = append(b.results, p.gap(next+1, first-1, now))
		}
		b.results = append(b.results, p.processAll(recs, now)...)
		select {
		case out <- b:
			next = b.last
		case <-ctx.Done():
			return
		}
	}
}

// gap reports journal positions pruned before the pipeline reached them.
func (p *Pipeline) gap(first, last uint64, now time.Time) result {
	reason := fmt.Sprintf("journal positions %d to %d were pruned by retention before the pipeline processed them; raise storage.retention or find why the pipeline lags", first, last)
	p.log.Error("pipeline found a gap in the journal", "first", first, "last", last)
	return result{pos: first, corr: fmt.Sprintf("journal-gap-%d-%d", first, last), exc: &exceptions.Exception{
		Kind: exceptions.KindJournalGap, Reason: reason, CreatedAt: now, Position: first}}
}

// processAll processes records in parallel chunks, keeping their order.
func (p *Pipeline) processAll(recs []journal.Record, now time.Time) []result {
	set := p.crosswalks.Snapshot()
	out := make([]result, len(recs))
	workers := runtime.GOMAXPROCS(0)
	if workers > 1 && len(recs) >= 64 {
		var wg sync.WaitGroup
		chunk := (len(recs) + workers - 1) / workers
		for lo := 0; lo < len(recs); lo += chunk {
			hi := min(lo+chunk, len(recs))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := lo; i < hi; i++ {
					out[i] = p.plan.process(recs[i], set, now, 0)
				}
			}()
		}
		wg.Wait()
		return out
	}
	for i, r := range recs {
		out[i] = p.plan.process(r, set, now, 0)
	}
	return out
}

// commit writes a batch's results and moves the cursor, atomically.
func (p *Pipeline) commit(b batch) error {
	now := p.now()
	err := p.db.Update(func(tx *bolt.Tx) error {
		app := p.outbox.NewAppender(tx)
		for i := range b.results {
			if _, err := p.applyTx(tx, app, &b.results[i], nil, now); err != nil {
				return err
			}
		}
		if err := app.Flush(); err != nil {
			return err
		}
		return boltkv.PutU64(pipedb.Meta(tx), keyCursor, b.last)
	})
	if err != nil {
		return err
	}
	p.cursor.Store(b.last)
	return nil
}

// applied counts what applyTx did.
type applied struct {
	emitted, skipped int
}

// applyTx writes one result: its outputs (to the outbox, an approval hold
// or a queue behind one), its exception, and its trace. For a replay, exc
// is the exception being replayed: outputs it already emitted are skipped.
func (p *Pipeline) applyTx(tx *bolt.Tx, app *outbox.Appender, r *result, replayed *exceptions.Exception, now time.Time) (applied, error) {
	var a applied
	refs := make([]string, 0, len(r.outputs)+1)
	var keys []string
	for i := range r.outputs {
		o := &r.outputs[i]
		if replayed != nil && replayed.HasEmitted(o.entry.IdempotencyKey) {
			a.skipped++
			continue
		}
		ref, err := p.emitTx(tx, app, o, now)
		if err != nil {
			return a, err
		}
		refs = append(refs, ref)
		keys = append(keys, o.entry.IdempotencyKey)
		a.emitted++
	}
	if replayed != nil {
		replayed.Emitted = append(replayed.Emitted, keys...)
	} else if r.exc != nil {
		r.exc.Emitted = keys
		if err := p.exceptions.AddTx(tx, r.exc); err != nil {
			return a, err
		}
		refs = append(refs, fmt.Sprintf("x:%d", r.exc.ID))
	}
	if len(refs) == 0 {
		return a, nil
	}
	if replayed == nil {
		// The first refs of a journal position: nothing to append to.
		tb := tx.Bucket(bucketTrace)
		tb.FillPercent = 0.9 // every partition grows at its end
		return a, tb.Put(traceKey(r.corr, r.pos), traceValue(r.corr, strings.Join(refs, ",")))
	}
	return a, addTraceTx(tx, r.corr, r.pos, refs...)
}

func (p *Pipeline) emitTx(tx *bolt.Tx, app *outbox.Appender, o *output, now time.Time) (string, error) {
	e := &o.entry
	switch {
	case o.hold != nil:
		a, err := p.approvals.HoldTx(tx, *e, o.hold.rule, o.hold.reason, now)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("a:%d", a.ID), nil
	case p.approvals.BlockedTx(tx, e.Destination, e.OrderingKey):
		if err := p.approvals.EnqueueTx(tx, e.Destination, e.OrderingKey, o.value); err != nil {
			return "", err
		}
		return "q:" + e.Destination + ":" + e.IdempotencyKey, nil
	}
	seq, err := app.Append(e.Destination, o.value)
	if err != nil {
		return "", err
	}
	return "o:" + e.Destination + ":" + strconv.FormatUint(seq, 10), nil
}

// The trace index maps a correlation id to what its events yielded. Its
// key is a partition (6 bits of the correlation id's hash), then the
// journal position: each of the 64 partitions grows at its end, so a
// commit rewrites at most 64 leaf pages however large the index is. Random
// keys (the correlation id itself) cost a page per event and slow down as
// the file grows; more partitions cost more rewritten pages per commit
// (256 measured ~250 bytes written per event). A trace reads one
// partition, 1/64 of the index.
const tracePartitions = 64

func tracePartition(corr string) byte {
	h := fnv.New32a()
	h.Write([]byte(corr))
	return byte(h.Sum32() % tracePartitions)
}

func traceKey(corr string, pos uint64) []byte {
	k := make([]byte, 9)
	k[0] = tracePartition(corr)
	binary.BigEndian.PutUint64(k[1:], pos)
	return k
}

// traceValue is the correlation id, a NUL, then the refs ("o:dest:seq",
// "a:id", "x:id", "q:dest:key", comma-separated).
func traceValue(corr, refs string) []byte {
	v := make([]byte, 0, len(corr)+1+len(refs))
	v = append(v, corr...)
	v = append(v, 0)
	return append(v, refs...)
}

// traceRefs splits a trace value; ok is false when it belongs to another
// correlation id of the same partition.
func traceRefs(corr string, v []byte) ([]string, bool) {
	c, refs, found := strings.Cut(string(v), "\x00")
	if !found || c != corr {
		return nil, false
	}
	if refs == "" {
		return nil, true
	}
	return strings.Split(refs, ","), true
}

// addTraceTx adds refs under an event's correlation id and position.
func addTraceTx(tx *bolt.Tx, corr string, pos uint64, refs ...string) error {
	tb := tx.Bucket(bucketTrace)
	k := traceKey(corr, pos)
	old, _ := traceRefs(corr, tb.Get(k))
	return tb.Put(k, traceValue(corr, strings.Join(append(old, refs...), ",")))
}
