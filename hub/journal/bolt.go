package journal

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/plantsync/plantsync/internal/boltkv"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// FormatVersion of the bbolt journal file.
const FormatVersion = 1

// ErrCorrupt marks a journal file that failed its checks on open.
var ErrCorrupt = errors.New("journal file is corrupt")

var (
	bucketMeta      = []byte("meta")
	bucketJournal   = []byte("journal")
	bucketIDs       = []byte("ids")
	bucketProducers = []byte("producers")
	bucketAgents    = []byte("agents")
	bucketRejected  = []byte("rejected")

	keyFormat     = []byte("format")
	keyNextPos    = []byte("next_pos")
	keyNextReject = []byte("next_rejected")
	keyBytes      = []byte("bytes")
	keyCount      = []byte("count")
)

// Retention bounds the journal and its dedup index. Whatever is older than
// MaxAge, or beyond MaxBytes counting from the newest, is pruned together
// with its dedup entry: an event id is recognised as a duplicate as long as
// its first copy is retained. Zero disables a bound.
type Retention struct {
	MaxAge   time.Duration `yaml:"max_age"`
	MaxBytes int64         `yaml:"max_bytes"`
	// Interval between pruning passes.
	Interval time.Duration `yaml:"interval"`
}

// BoltOptions configure the embedded journal.
type BoltOptions struct {
	Path      string
	Retention Retention
	Logger    *slog.Logger
	// CommitInterval groups commits from several streams into one fsync.
	CommitInterval time.Duration
	// Now is the clock (tests move it).
	Now func() time.Time
}

type commitReq struct {
	batch *Batch
	done  func(Outcome, error)
}

// Bolt is the embedded bbolt journal.
type Bolt struct {
	db   *bolt.DB
	opts BoltOptions
	log  *slog.Logger

	reqs      chan commitReq
	pruneReqs chan chan pruneResult
	closing   chan struct{}
	stop      chan struct{}
	finished  chan struct{}
	sendMu    sync.RWMutex
	closed    bool
	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	stats  Stats
	notify chan struct{}
	// tail holds the records of the latest commits, in position order, for
	// ReadDecoded: the pipeline, close behind the commits, takes them with
	// their decoded events instead of reading and decoding them again.
	// At most tailMax records; what falls out is read from storage.
	tail []Record
}

// tailMax bounds the records kept for ReadDecoded: a few pipeline
// batches.
const tailMax = 8192

var (
	_ Journal    = (*Bolt)(nil)
	_ TailReader = (*Bolt)(nil)
)

// OpenBolt opens or creates the journal file.
func OpenBolt(opts BoltOptions) (*Bolt, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	db, err := boltkv.Open(opts.Path, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType},
		boltkv.OpenSpec{What: "journal", Corrupt: ErrCorrupt, Owner: "is another hub running with the same storage.dir?",
			Aside: "to start an empty journal (agents resend only what they still buffer)"})
	if err != nil {
		return nil, err
	}
	j := &Bolt{
		db: db, opts: opts, log: opts.Logger,
		reqs:      make(chan commitReq, 256),
		pruneReqs: make(chan chan pruneResult),
		closing:   make(chan struct{}),
		stop:      make(chan struct{}),
		finished:  make(chan struct{}),
		notify:    make(chan struct{}),
	}
	if err := j.load(); err != nil {
		_ = db.Close()
		return nil, err
	}
	go j.run()
	j.log.Info("journal opened", "path", opts.Path, "records", j.stats.Records, "last_position", j.stats.LastPosition)
	return j, nil
}

func (j *Bolt) load() error {
	return j.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			for _, name := range [][]byte{bucketMeta, bucketJournal, bucketIDs, bucketProducers, bucketAgents, bucketRejected} {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
			meta = tx.Bucket(bucketMeta)
			if err := meta.Put(keyFormat, []byte(strconv.Itoa(FormatVersion))); err != nil {
				return err
			}
			if err := boltkv.PutU64(meta, keyNextPos, 1); err != nil {
				return err
			}
			return boltkv.PutU64(meta, keyNextReject, 1)
		}
		format, err := strconv.Atoi(string(meta.Get(keyFormat)))
		if err != nil || format < 1 {
			return fmt.Errorf("%w: %s: format version %q unreadable", ErrCorrupt, j.opts.Path, meta.Get(keyFormat))
		}
		if format > FormatVersion {
			return fmt.Errorf("journal %s has format %d, this hub reads up to %d; upgrade the hub", j.opts.Path, format, FormatVersion)
		}
		for _, name := range [][]byte{bucketJournal, bucketIDs, bucketProducers, bucketAgents, bucketRejected} {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%w: %s: bucket %s missing", ErrCorrupt, j.opts.Path, name)
			}
		}
		j.stats.LastPosition = boltkv.GetU64(meta, keyNextPos) - 1
		j.stats.Records = boltkv.GetU64(meta, keyCount)
		j.stats.Bytes = int64(boltkv.GetU64(meta, keyBytes))
		if k, _ := tx.Bucket(bucketJournal).Cursor().First(); k != nil {
			j.stats.FirstPosition = binary.BigEndian.Uint64(k)
		}
		return nil
	})
}

// CommitAsync implements Journal.
func (j *Bolt) CommitAsync(ctx context.Context, b *Batch, done func(Outcome, error)) error {
	j.sendMu.RLock()
	defer j.sendMu.RUnlock()
	if j.closed {
		return ErrClosed
	}
	select {
	case j.reqs <- commitReq{batch: b, done: done}:
		return nil
	case <-j.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Commit implements Journal.
func (j *Bolt) Commit(ctx context.Context, b *Batch) (Outcome, error) {
	type res struct {
		o   Outcome
		err error
	}
	ch := make(chan res, 1)
	if err := j.CommitAsync(ctx, b, func(o Outcome, err error) { ch <- res{o, err} }); err != nil {
		return Outcome{}, err
	}
	select {
	case r := <-ch:
		return r.o, r.err
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	}
}

func (j *Bolt) run() {
	defer close(j.finished)
	var prune <-chan time.Time
	if j.opts.Retention.Interval > 0 && (j.opts.Retention.MaxAge > 0 || j.opts.Retention.MaxBytes > 0) {
		t := time.NewTicker(j.opts.Retention.Interval)
		defer t.Stop()
		prune = t.C
	}
	for {
		var group []commitReq
		select {
		case r := <-j.reqs:
			group = append(group, r)
		case <-prune:
			if _, err := j.prune(); err != nil {
				j.log.Error("journal pruning failed", "error", err)
			}
			continue
		case reply := <-j.pruneReqs:
			n, err := j.prune()
			reply <- pruneResult{n, err}
			continue
		case <-j.stop:
			j.drain()
			return
		}
		group = j.gather(group)
		j.commitGroup(group)
	}
}

func (j *Bolt) gather(group []commitReq) []commitReq {
	var deadline <-chan time.Time
	if j.opts.CommitInterval > 0 {
		t := time.NewTimer(j.opts.CommitInterval)
		defer t.Stop()
		deadline = t.C
	}
	for len(group) < 64 {
		if deadline == nil {
			select {
			case r := <-j.reqs:
				group = append(group, r)
				continue
			default:
				return group
			}
		}
		select {
		case r := <-j.reqs:
			group = append(group, r)
		case <-deadline:
			return group
		case <-j.stop:
			return group
		}
	}
	return group
}

func (j *Bolt) drain() {
	for {
		var group []commitReq
		for len(group) < 64 {
			select {
			case r := <-j.reqs:
				group = append(group, r)
				continue
			default:
			}
			break
		}
		if len(group) == 0 {
			return
		}
		j.commitGroup(group)
	}
}

func (j *Bolt) commitGroup(group []commitReq) {
	outcomes := make([]Outcome, len(group))
	var st Stats
	var journaled int
	now := j.opts.Now()
	err := j.db.Update(func(tx *bolt.Tx) error {
		journaled = 0
		st = j.Stats()
		w := writer{tx: tx, st: &st, now: now}
		w.load()
		for i, r := range group {
			o, err := w.commit(r.batch)
			if err != nil {
				return err
			}
			outcomes[i] = o
			journaled += o.Journaled
		}
		return w.save()
	})
	if err != nil {
		j.mu.Lock()
		j.stats.Degraded = err.Error()
		j.mu.Unlock()
		j.log.Error("journal commit failed; batches not acknowledged (producers will resend)", "error", err, "batches", len(group))
		for _, r := range group {
			r.done(Outcome{}, fmt.Errorf("journal commit: %w", err))
		}
		return
	}
	j.mu.Lock()
	st.Degraded = ""
	j.stats = st
	if journaled > 0 {
		j.keepTail(group, outcomes, now)
		close(j.notify)
		j.notify = make(chan struct{})
	}
	j.mu.Unlock()
	for i, r := range group {
		r.done(outcomes[i], nil)
	}
}

// writer applies batches inside one transaction.
type writer struct {
	tx                                              *bolt.Tx
	st                                              *Stats
	now                                             time.Time
	meta, journal, ids, producers, agents, rejected *bolt.Bucket
	nextPos, nextReject                             uint64
}

func (w *writer) load() {
	w.meta = w.tx.Bucket(bucketMeta)
	w.journal = w.tx.Bucket(bucketJournal)
	// Positions only ever grow, so full pages never take a later insert:
	// filling them (bbolt splits at half by default) halves the pages each
	// commit writes and fsyncs, and the file. Not for ids: event ids from
	// sources arrive in no order.
	w.journal.FillPercent = 1.0
	w.ids = w.tx.Bucket(bucketIDs)
	w.producers = w.tx.Bucket(bucketProducers)
	w.agents = w.tx.Bucket(bucketAgents)
	w.rejected = w.tx.Bucket(bucketRejected)
	w.nextPos = boltkv.GetU64(w.meta, keyNextPos)
	w.nextReject = boltkv.GetU64(w.meta, keyNextReject)
}

func (w *writer) save() error {
	w.st.LastPosition = w.nextPos - 1
	if err := boltkv.PutU64(w.meta, keyNextPos, w.nextPos); err != nil {
		return err
	}
	if err := boltkv.PutU64(w.meta, keyNextReject, w.nextReject); err != nil {
		return err
	}
	if err := boltkv.PutU64(w.meta, keyCount, w.st.Records); err != nil {
		return err
	}
	return boltkv.PutU64(w.meta, keyBytes, uint64(w.st.Bytes))
}

func producerKey(producer, epoch string) []byte {
	return []byte(producer + "\x00" + epoch)
}

func (w *writer) commit(b *Batch) (Outcome, error) {
	o := Outcome{Results: make([]Result, len(b.Events))}
	pk := producerKey(b.Producer, b.Epoch)
	ps := readProducer(w.producers.Get(pk))
	watermark := ps.watermark
	received := timestamppb.New(w.now)
	for i, in := range b.Events {
		if in.Sequence != 0 && in.Sequence <= watermark {
			o.Results[i] = Result{Status: StatusDuplicate}
			o.Duplicates++
			continue
		}
		rec := &pb.JournalRecord{ReceivedAt: received, Producer: b.Producer, Epoch: b.Epoch, Event: in.Raw, EventId: in.ID}
		if in.Rejected != "" {
			rec.Position = w.nextReject
			rec.RejectedReason = in.Rejected
			if err := putRecord(w.rejected, rec); err != nil {
				return o, err
			}
			o.Results[i] = Result{Status: StatusRejected, Position: w.nextReject}
			w.nextReject++
			o.Rejected++
			if in.Sequence != 0 {
				ps.rejected++
			}
			continue
		}
		if pos := w.ids.Get([]byte(in.ID)); pos != nil {
			o.Results[i] = Result{Status: StatusDuplicate, Position: binary.BigEndian.Uint64(pos)}
			o.Duplicates++
			if in.Sequence != 0 {
				ps.duplicates++
			}
			continue
		}
		rec.Position = w.nextPos
		size, err := putRecordSize(w.journal, rec)
		if err != nil {
			return o, err
		}
		if err := w.ids.Put([]byte(in.ID), boltkv.U64(w.nextPos)); err != nil {
			return o, err
		}
		if w.st.FirstPosition == 0 {
			w.st.FirstPosition = w.nextPos
		}
		o.Results[i] = Result{Status: StatusJournaled, Position: w.nextPos}
		w.nextPos++
		w.st.Records++
		w.st.Bytes += size
		o.Journaled++
	}
	if b.LastSequence > watermark || o.Duplicates > 0 || o.Rejected > 0 {
		watermark = max(watermark, b.LastSequence)
		ps.watermark = watermark
		if err := w.producers.Put(pk, ps.encode()); err != nil {
			return o, err
		}
	}
	o.Watermark = watermark
	if b.Agent != nil {
		raw, err := json.Marshal(AgentState{ID: b.Agent.ID, Plant: b.Agent.Plant, Epoch: b.Epoch, LastSequence: watermark,
			DuplicateEvents: ps.duplicates, RejectedEvents: ps.rejected, LastSeen: w.now.UTC()})
		if err != nil {
			return o, err
		}
		if err := w.agents.Put([]byte(b.Agent.ID), raw); err != nil {
			return o, err
		}
	}
	w.st.JournaledTotal += uint64(o.Journaled)
	w.st.DuplicateTotal += uint64(o.Duplicates)
	w.st.RejectedTotal += uint64(o.Rejected)
	return o, nil
}

func putRecord(bk *bolt.Bucket, rec *pb.JournalRecord) error {
	_, err := putRecordSize(bk, rec)
	return err
}

func putRecordSize(bk *bolt.Bucket, rec *pb.JournalRecord) (int64, error) {
	v, err := proto.Marshal(rec)
	if err != nil {
		return 0, err
	}
	return int64(len(v) + 8), bk.Put(boltkv.U64(rec.Position), v)
}

// producerState is kept per (producer, epoch): the watermark, and how many
// of the epoch's sequences were dropped as id duplicates or rejected, so
// that journaled + duplicates + rejected accounts for every sequence.
type producerState struct {
	watermark, duplicates, rejected uint64
}

// readProducer decodes a producers value; format 1 files hold only the
// 8-byte watermark.
func readProducer(v []byte) producerState {
	var ps producerState
	if len(v) >= 8 {
		ps.watermark = binary.BigEndian.Uint64(v)
	}
	if len(v) >= 24 {
		ps.duplicates = binary.BigEndian.Uint64(v[8:])
		ps.rejected = binary.BigEndian.Uint64(v[16:])
	}
	return ps
}

func (ps producerState) encode() []byte {
	b := make([]byte, 24)
	binary.BigEndian.PutUint64(b, ps.watermark)
	binary.BigEndian.PutUint64(b[8:], ps.duplicates)
	binary.BigEndian.PutUint64(b[16:], ps.rejected)
	return b
}

// Resume implements Journal.
func (j *Bolt) Resume(producer, epoch string) (uint64, error) {
	var w uint64
	err := j.db.View(func(tx *bolt.Tx) error {
		w = readProducer(tx.Bucket(bucketProducers).Get(producerKey(producer, epoch))).watermark
		return nil
	})
	return w, err
}

// Read implements Journal.
func (j *Bolt) Read(after uint64, limit int) ([]Record, error) {
	return j.read(bucketJournal, after, limit)
}

// Rejected implements Journal.
func (j *Bolt) Rejected(after uint64, limit int) ([]Record, error) {
	return j.read(bucketRejected, after, limit)
}

func (j *Bolt) read(bucket []byte, after uint64, limit int) ([]Record, error) {
	var out []Record
	err := j.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.Seek(boltkv.U64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			var rec pb.JournalRecord
			if err := proto.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("%w: record %d: %v", ErrCorrupt, binary.BigEndian.Uint64(k), err)
			}
			out = append(out, Record{
				Position:   rec.GetPosition(),
				ReceivedAt: rec.GetReceivedAt().AsTime(),
				Producer:   rec.GetProducer(),
				Epoch:      rec.GetEpoch(),
				EventID:    rec.GetEventId(),
				Event:      rec.GetEvent(), // Unmarshal copied the bytes out of the mmap
				Reason:     rec.GetRejectedReason(),
			})
		}
		return nil
	})
	return out, err
}

// keepTail appends the group's journaled records to the tail. j.mu held.
func (j *Bolt) keepTail(group []commitReq, outcomes []Outcome, now time.Time) {
	received := timestamppb.New(now).AsTime() // as Read gives it back
	for i, r := range group {
		for k, res := range outcomes[i].Results {
			if res.Status != StatusJournaled {
				continue
			}
			in := &r.batch.Events[k]
			j.tail = append(j.tail, Record{Position: res.Position, ReceivedAt: received, Producer: r.batch.Producer,
				Epoch: r.batch.Epoch, EventID: in.ID, Event: in.Raw, Decoded: in.Decoded})
		}
	}
	if n := len(j.tail); n > tailMax {
		// The pipeline is far behind: keep the newest half, copied so the
		// dropped records (and their events) can be collected. Halving
		// makes the copy rare: once per tailMax/2 records.
		j.tail = append(make([]Record, 0, tailMax), j.tail[n-tailMax/2:]...)
	}
}

// dropTail forgets tail records below first (pruned). j.mu held.
func (j *Bolt) dropTail(first uint64) {
	i := 0
	for i < len(j.tail) && j.tail[i].Position < first {
		i++
	}
	j.tail = j.tail[i:]
}

// ReadDecoded implements TailReader.
func (j *Bolt) ReadDecoded(after uint64, limit int) ([]Record, error) {
	j.mu.Lock()
	if len(j.tail) > 0 && j.tail[0].Position <= after+1 && after < j.tail[len(j.tail)-1].Position {
		// Positions in the tail are consecutive.
		from := int(after + 1 - j.tail[0].Position)
		to := min(len(j.tail), from+limit)
		out := make([]Record, to-from)
		copy(out, j.tail[from:to])
		// The records are handed over: nobody else gets their events, and
		// the pipeline never reads behind itself.
		j.tail = j.tail[to:]
		j.mu.Unlock()
		return out, nil
	}
	j.mu.Unlock()
	return j.read(bucketJournal, after, limit)
}

// Agents implements Journal.
func (j *Bolt) Agents() ([]AgentState, error) {
	var out []AgentState
	err := j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAgents).ForEach(func(k, v []byte) error {
			var a AgentState
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("%w: agent %q: %v", ErrCorrupt, k, err)
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

// Stats implements Journal.
func (j *Bolt) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.stats
}

// Changed implements Journal.
func (j *Bolt) Changed() <-chan struct{} {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.notify
}

// Close finishes queued commits and closes the file. Idempotent.
func (j *Bolt) Close() error {
	j.closeOnce.Do(func() {
		close(j.closing)
		j.sendMu.Lock()
		j.closed = true
		j.sendMu.Unlock()
		close(j.stop)
		<-j.finished
		j.closeErr = j.db.Close()
		j.log.Info("journal closed", "path", j.opts.Path)
	})
	return j.closeErr
}
