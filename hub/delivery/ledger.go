package delivery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// ErrLedger marks a ledger file that cannot be used.
var ErrLedger = errors.New("delivery ledger")

var (
	bucketMarks = []byte("marks")
	bucketMeta  = []byte("meta")
	keyFormat   = []byte("format")
)

// ledgerFormat is the version of the file layout.
const ledgerFormat = 1

// forgetFlushAt bounds the forgotten marks kept in memory before Forget
// writes them itself.
const forgetFlushAt = 4096

// Mark says that an attempt to deliver an outbox entry may have started.
type Mark struct {
	Seq            uint64
	IdempotencyKey string
}

// Ledger is the delivery engine's durable record of attempts that may
// have reached a target without their outcome being recorded in the
// outbox. It lives in its own bbolt file (delivery.db) because the outbox's
// file belongs to the pipeline. Marks are written, with one fsync, before
// the entries they name can be attempted; a mark is forgotten once the
// entry's outcome sits in the outbox. Forgetting is lazy: a mark that
// outlives its entry's outcome (a crash before the forget reached the
// disk) only costs a Lookup, never a duplicate, so forgets ride along with
// the next write instead of paying their own fsync.
type Ledger struct {
	db *bolt.DB

	mu     sync.Mutex
	forget map[string][]uint64
	closed bool
}

// OpenLedger opens or creates the ledger file at path.
func OpenLedger(path string) (*Ledger, error) {
	db, err := boltkv.Open(path, &bolt.Options{Timeout: 2 * time.Second},
		boltkv.OpenSpec{What: "delivery ledger", Corrupt: ErrLedger, Owner: "is another hub running with the same storage.dir?",
			Aside: "to start an empty ledger (deliveries cut short when the hub stopped are then retried without first being looked up in the target: check the target for duplicates)"})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch v := m.Get(keyFormat); {
		case v == nil:
			if err := m.Put(keyFormat, boltkv.U64(ledgerFormat)); err != nil {
				return err
			}
		case len(v) != 8 || binary.BigEndian.Uint64(v) != ledgerFormat:
			return fmt.Errorf("%w %s: format %x; this hub reads format %d", ErrLedger, path, v, ledgerFormat)
		}
		_, err = tx.CreateBucketIfNotExists(bucketMarks)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %w", err)
	}
	return &Ledger{db: db, forget: map[string][]uint64{}}, nil
}

// Marks returns the sequence numbers marked for dest, ascending.
func (l *Ledger) Marks(dest string) ([]uint64, error) {
	var out []uint64
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMarks).Bucket([]byte(dest))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			if len(k) == 8 {
				out = append(out, binary.BigEndian.Uint64(k))
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("%w: read marks of %s: %w", ErrLedger, dest, err)
	}
	l.mu.Lock()
	gone := map[uint64]bool{}
	for _, s := range l.forget[dest] {
		gone[s] = true
	}
	l.mu.Unlock()
	kept := out[:0]
	for _, s := range out {
		if !gone[s] {
			kept = append(kept, s)
		}
	}
	return kept, nil
}

// Mark records marks for dest durably (one fsync), together with every
// forget queued so far.
func (l *Ledger) Mark(dest string, marks []Mark) error {
	return l.write(dest, marks)
}

// Forget queues the marks of dest for removal; the next Mark or Flush
// writes the removal.
func (l *Ledger) Forget(dest string, seqs []uint64) {
	if len(seqs) == 0 {
		return
	}
	l.mu.Lock()
	l.forget[dest] = append(l.forget[dest], seqs...)
	n := 0
	for _, s := range l.forget {
		n += len(s)
	}
	l.mu.Unlock()
	if n >= forgetFlushAt {
		// A failure leaves them queued for the next write.
		_ = l.Flush()
	}
}

// Flush writes the queued forgets.
func (l *Ledger) Flush() error { return l.write("", nil) }

func (l *Ledger) write(dest string, marks []Mark) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return fmt.Errorf("%w: closed", ErrLedger)
	}
	forget := l.forget
	l.forget = map[string][]uint64{}
	l.mu.Unlock()
	if len(marks) == 0 && len(forget) == 0 {
		return nil
	}
	sort.Slice(marks, func(i, j int) bool { return marks[i].Seq < marks[j].Seq })
	err := l.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketMarks)
		for d, seqs := range forget {
			b := root.Bucket([]byte(d))
			if b == nil {
				continue
			}
			for _, s := range seqs {
				if err := b.Delete(boltkv.U64(s)); err != nil {
					return err
				}
			}
		}
		if len(marks) == 0 {
			return nil
		}
		b, err := root.CreateBucketIfNotExists([]byte(dest))
		if err != nil {
			return err
		}
		for _, m := range marks {
			if err := b.Put(boltkv.U64(m.Seq), []byte(m.IdempotencyKey)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Put the forgets back: they are still owed.
		l.mu.Lock()
		for d, seqs := range forget {
			l.forget[d] = append(seqs, l.forget[d]...)
		}
		l.mu.Unlock()
		return fmt.Errorf("%w: write: %w", ErrLedger, err)
	}
	return nil
}

// Close writes the queued forgets and closes the file. It is idempotent.
func (l *Ledger) Close() error {
	flushErr := l.Flush()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	if err := l.db.Close(); err != nil {
		return fmt.Errorf("%w: close: %w", ErrLedger, err)
	}
	return flushErr
}
