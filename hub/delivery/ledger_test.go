package delivery

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// Marks survive a reopen; forgets are written with the next write (or
// Flush, or Close), and a forget lost to a crash leaves only a mark.
func TestLedgerMarksAndForgets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "delivery.db")
	l, err := OpenLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Mark("erp", []Mark{{Seq: 3, IdempotencyKey: "k3"}, {Seq: 1, IdempotencyKey: "k1"}, {Seq: 2, IdempotencyKey: "k2"}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Mark("portal", []Mark{{Seq: 1, IdempotencyKey: "p1"}}); err != nil {
		t.Fatal(err)
	}
	l.Forget("erp", []uint64{2})
	if m, _ := l.Marks("erp"); !slices.Equal(m, []uint64{1, 3}) {
		t.Errorf("marks after forget %v; a queued forget hides the mark at once", m)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	l, err = OpenLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if m, _ := l.Marks("erp"); !slices.Equal(m, []uint64{1, 3}) {
		t.Errorf("erp marks after reopen %v; want [1 3]", m)
	}
	if m, _ := l.Marks("portal"); !slices.Equal(m, []uint64{1}) {
		t.Errorf("portal marks after reopen %v", m)
	}
	if m, _ := l.Marks("planning"); len(m) != 0 {
		t.Errorf("unknown destination has marks %v", m)
	}
}

// A file of another format is refused, not misread.
func TestLedgerRefusesOtherFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "delivery.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keyFormat, boltkv.U64(99))
	})
	_ = db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLedger(path); !errors.Is(err, ErrLedger) {
		t.Errorf("open: %v; want ErrLedger", err)
	}
}
