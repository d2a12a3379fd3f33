package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// FormatVersion is the on-disk layout this binary writes. Open reads every
// version up to it and migrates older files in place.
const FormatVersion = 1

var (
	// ErrClosed is returned for appends that were not committed before the
	// buffer closed; their source must not acknowledge them.
	ErrClosed = errors.New("buffer closed")
	// ErrTooLarge is returned for a single append larger than max_bytes.
	ErrTooLarge = errors.New("append larger than the whole buffer")
	// ErrCorrupt marks a buffer file that failed its integrity checks on
	// open. The agent refuses to start rather than silently empty it.
	ErrCorrupt = errors.New("buffer file is corrupt")
	// ErrInvalidEvent is returned for an event that cannot be encoded (e.g.
	// a string field that is not valid UTF-8); nothing of the append is
	// queued, so the source can quarantine it.
	ErrInvalidEvent = errors.New("event cannot be encoded")
	// ErrNewerFormat marks a file written by a newer agent.
	ErrNewerFormat = errors.New("buffer file format is newer than this agent")
)

var (
	bucketMeta   = []byte("meta")
	bucketEvents = []byte("events")
	// bucketState holds one nested bucket per source name.
	bucketState = []byte("source_state")

	keyFormat       = []byte("format")
	keyEpoch        = []byte("epoch")
	keyNextSeq      = []byte("next_seq")
	keyAckedThrough = []byte("acked_through")
	keyBytes        = []byte("bytes")
	keyCount        = []byte("count")
	keyDroppedTotal = []byte("dropped_total")
)

// Options are the collaborators a buffer is given.
type Options struct {
	Logger *slog.Logger
	// ObserveCommit, when set, is told each commit's duration and size.
	ObserveCommit func(d time.Duration, events int)
	// Decorate fills agent identity (plant, correlation) into events the
	// buffer creates itself, such as buffer.overflow reports.
	Decorate func(ev *pb.Event)
}

// Done is called once an append is committed (err nil; first..last are the
// sequences it got) or has failed for good.
type Done func(first, last uint64, err error)

type request struct {
	// encoded holds each event marshaled without its sequence, with room
	// for the committer to append the sequence field (see appendSequence).
	encoded [][]byte
	state   []StateWrite
	done    Done
	size    int64 // estimated, for the space check before encoding
}

// StateWrite is a source's own small state (e.g. a recent-ids window)
// committed in the same transaction as the events it belongs to, so that
// after a crash either both are there or neither is.
type StateWrite struct {
	Source string
	Key    []byte
	Value  []byte // nil deletes the key
}

// Stats is a snapshot of the buffer.
type Stats struct {
	Epoch        string
	Events       uint64 // stored, not yet acked by the hub
	Bytes        int64
	LastSeq      uint64 // highest committed sequence
	AckedThrough uint64
	DroppedTotal uint64
	Blocked      bool   // appends are waiting for space
	Degraded     string // last commit error while retrying (e.g. disk full); "" when healthy
}

// Buffer is a durable, bounded, sequence-ordered event queue in one bbolt
// file. It is safe for concurrent use.
type Buffer struct {
	cfg     Config
	db      *bolt.DB
	log     *slog.Logger
	path    string
	opts    Options
	epoch   string
	newFile bool

	reqs      chan *request
	acks      chan uint64
	closing   chan struct{} // closed first by Close: releases blocked senders
	stop      chan struct{} // closed once no sender can be mid-send
	finished  chan struct{}
	sendMu    sync.RWMutex // held shared by senders, exclusively by Close
	closed    bool
	closeOnce sync.Once
	closeErr  error

	sentThrough atomic.Uint64 // highest sequence handed to the uplink
	// readMu makes "read a batch and mark it sent" atomic with respect to
	// drop_oldest choosing what to drop, so an event is never both sent to
	// the hub and reported dropped.
	readMu sync.Mutex

	mu     sync.Mutex
	stats  Stats
	notify chan struct{} // closed and replaced whenever events are committed
}

// Open opens or creates the buffer file at path. A file that fails its
// integrity checks yields ErrCorrupt and is left untouched for inspection.
func Open(path string, cfg Config, opts Options) (*Buffer, error) {
	if errs := cfg.Validate("buffer"); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	existed := fileExists(path)
	db, err := openBolt(path, cfg)
	if err != nil {
		return nil, err
	}
	b := &Buffer{
		cfg: cfg, db: db, log: opts.Logger, path: path, opts: opts,
		reqs:     make(chan *request, 1024),
		acks:     make(chan uint64, 64),
		closing:  make(chan struct{}),
		stop:     make(chan struct{}),
		finished: make(chan struct{}),
		notify:   make(chan struct{}),
	}
	if err := b.load(existed); err != nil {
		_ = db.Close()
		return nil, err
	}
	b.sentThrough.Store(b.stats.AckedThrough)
	go b.commitLoop()
	b.log.Info("buffer opened", "path", path, "epoch", b.epoch, "new_epoch", b.newFile,
		"events", b.stats.Events, "bytes", b.stats.Bytes, "last_seq", b.stats.LastSeq)
	return b, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// openBolt opens the file; boltkv.Open turns what is wrong with it into
// ErrCorrupt.
func openBolt(path string, cfg Config) (*bolt.DB, error) {
	return boltkv.Open(path, &bolt.Options{
		Timeout: cfg.OpenTimeout,
		// The freelist is synced: with NoFreelistSync bbolt rebuilds it on
		// open by walking every page in a goroutine of its own, where a
		// damaged page panics beyond any recover.
		FreelistType: bolt.FreelistMapType,
	}, boltkv.OpenSpec{What: "buffer", Corrupt: ErrCorrupt, Owner: "is another agent running with the same state_dir?",
		Aside: "to start a new epoch (its unsent events are then lost)"})
}

func (b *Buffer) load(existed bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, b.path, r)
		}
	}()
	return b.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			if existed && tx.Bucket(bucketEvents) != nil {
				return fmt.Errorf("%w: %s has events but no metadata", ErrCorrupt, b.path)
			}
			return b.initFile(tx)
		}
		format, err := strconv.Atoi(string(meta.Get(keyFormat)))
		if err != nil {
			return fmt.Errorf("%w: %s: format version %q unreadable", ErrCorrupt, b.path, meta.Get(keyFormat))
		}
		if format > FormatVersion {
			return fmt.Errorf("%w: %s has format %d, this agent reads up to %d; upgrade the agent", ErrNewerFormat, b.path, format, FormatVersion)
		}
		events := tx.Bucket(bucketEvents)
		if events == nil {
			return fmt.Errorf("%w: %s: events bucket missing", ErrCorrupt, b.path)
		}
		b.epoch = string(meta.Get(keyEpoch))
		if b.epoch == "" {
			return fmt.Errorf("%w: %s: epoch missing", ErrCorrupt, b.path)
		}
		next := boltkv.GetU64(meta, keyNextSeq)
		if next == 0 {
			return fmt.Errorf("%w: %s: next sequence missing", ErrCorrupt, b.path)
		}
		if k, _ := events.Cursor().Last(); k != nil && boltkv.ToU64(k) >= next {
			return fmt.Errorf("%w: %s: stored sequence %d is beyond the recorded next sequence %d", ErrCorrupt, b.path, boltkv.ToU64(k), next)
		}
		b.stats = Stats{
			Epoch:        b.epoch,
			Events:       boltkv.GetU64(meta, keyCount),
			Bytes:        int64(boltkv.GetU64(meta, keyBytes)),
			LastSeq:      next - 1,
			AckedThrough: boltkv.GetU64(meta, keyAckedThrough),
			DroppedTotal: boltkv.GetU64(meta, keyDroppedTotal),
		}
		return nil
	})
}

func (b *Buffer) initFile(tx *bolt.Tx) error {
	meta, err := tx.CreateBucket(bucketMeta)
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists(bucketEvents); err != nil {
		return err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("new epoch: %w", err)
	}
	b.epoch = id.String()
	b.newFile = true
	if err := meta.Put(keyFormat, []byte(strconv.Itoa(FormatVersion))); err != nil {
		return err
	}
	if err := meta.Put(keyEpoch, []byte(b.epoch)); err != nil {
		return err
	}
	b.stats = Stats{Epoch: b.epoch}
	return boltkv.PutU64(meta, keyNextSeq, 1)
}

// Epoch identifies this buffer file's life; it changes only with a new file.
func (b *Buffer) Epoch() string { return b.epoch }

// NewEpoch reports whether Open created the file (so a new epoch began).
func (b *Buffer) NewEpoch() bool { return b.newFile }

// AppendAsync queues events for the next group commit and returns at once,
// unless the queue is full (then it waits: that is the back-pressure a source
// feels under the block policy). done runs on the committer goroutine: keep it
// short. The buffer encodes the events before it returns; the sequence each
// gets is reported to done and stored in the encoded event.
func (b *Buffer) AppendAsync(ctx context.Context, events []*pb.Event, done Done) error {
	return b.AppendWithState(ctx, events, nil, done)
}

// AppendWithState is AppendAsync plus source state written in the same
// commit. State bytes do not count against max_bytes; keep them small.
func (b *Buffer) AppendWithState(ctx context.Context, events []*pb.Event, state []StateWrite, done Done) error {
	if len(events) == 0 && len(state) == 0 {
		done(0, 0, nil)
		return nil
	}
	// Encoding happens here, on the source's goroutine, once: the single
	// committer only appends the sequence, and an event that cannot be
	// encoded is refused to its source instead of failing a whole group.
	encoded := make([][]byte, len(events))
	var size int64
	for i, ev := range events {
		raw, err := encodeEvent(ev)
		if err != nil {
			return err
		}
		encoded[i] = raw
		size += int64(len(raw)) + 8 + sequenceFieldMax
	}
	r := &request{encoded: encoded, state: state, done: done, size: size}
	b.sendMu.RLock()
	defer b.sendMu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	select {
	case b.reqs <- r:
		return nil
	case <-b.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Append queues events and waits until they are committed. It returns the
// first and last sequence they got.
func (b *Buffer) Append(ctx context.Context, events ...*pb.Event) (first, last uint64, err error) {
	type result struct {
		first, last uint64
		err         error
	}
	ch := make(chan result, 1)
	if err := b.AppendAsync(ctx, events, func(f, l uint64, err error) { ch <- result{f, l, err} }); err != nil {
		return 0, 0, err
	}
	select {
	case r := <-ch:
		return r.first, r.last, r.err
	case <-ctx.Done():
		// The append may still commit; the caller must treat it as unknown.
		return 0, 0, ctx.Err()
	}
}

// Ack records that the hub has committed every sequence through seq; the
// events are deleted with the next commit.
func (b *Buffer) Ack(seq uint64) {
	select {
	case b.acks <- seq:
	case <-b.closing:
	}
}

// MarkSent records the highest sequence handed to the uplink. drop_oldest
// never drops what may already be at the hub.
func (b *Buffer) MarkSent(seq uint64) {
	for {
		cur := b.sentThrough.Load()
		if seq <= cur || b.sentThrough.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// ReadForSend reads like ReadAfter and marks what it read as sent, atomically
// with respect to drop_oldest: what it returns is never reported dropped.
func (b *Buffer) ReadForSend(after uint64, maxEvents, maxBytes int) (Batch, error) {
	b.readMu.Lock()
	defer b.readMu.Unlock()
	batch, err := b.ReadAfter(after, maxEvents, maxBytes)
	if err == nil && len(batch.Events) > 0 {
		b.MarkSent(batch.Last)
	}
	return batch, err
}

// ResetSent sets the sent mark to the hub's resume point after a reconnect.
func (b *Buffer) ResetSent(seq uint64) { b.sentThrough.Store(seq) }

// Stats returns a snapshot.
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Changed returns a channel that is closed after the next commit that adds
// events. Callers re-read state, then wait on a fresh channel.
func (b *Buffer) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.notify
}

// Batch is a run of stored events read for the uplink.
type Batch struct {
	First, Last uint64
	Events      [][]byte
}

// ReadAfter returns up to maxEvents stored events (and about maxBytes) with
// sequences above after, in order. Sequences dropped under drop_oldest are
// simply absent. The bytes are copies, safe after the call.
func (b *Buffer) ReadAfter(after uint64, maxEvents int, maxBytes int) (Batch, error) {
	var out Batch
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		var size int
		for k, v := c.Seek(boltkv.U64(after + 1)); k != nil; k, v = c.Next() {
			if len(out.Events) >= maxEvents || (size > 0 && size+len(v) > maxBytes) {
				break
			}
			seq := boltkv.ToU64(k)
			if out.First == 0 {
				out.First = seq
			}
			out.Last = seq
			out.Events = append(out.Events, append([]byte(nil), v...))
			size += len(v)
		}
		return nil
	})
	return out, err
}

// Close commits what has been queued, fails what cannot be committed with
// ErrClosed and closes the file. It is idempotent.
func (b *Buffer) Close() error {
	b.closeOnce.Do(func() {
		close(b.closing)
		b.sendMu.Lock()
		b.closed = true
		b.sendMu.Unlock()
		close(b.stop)
		<-b.finished
		b.closeErr = b.db.Close()
		b.log.Info("buffer closed", "path", b.path)
	})
	return b.closeErr
}

// ReadState calls fn for every key of a source's committed state, in key
// order. The bytes are only valid during fn.
func (b *Buffer) ReadState(source string, fn func(key, value []byte) error) error {
	return b.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketState)
		if root == nil {
			return nil
		}
		bk := root.Bucket([]byte(source))
		if bk == nil {
			return nil
		}
		return bk.ForEach(fn)
	})
}
