package approvals

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/outbox"
	"github.com/plantsync/plantsync/hub/pipedb"
)

// Two held actions and a plain one on one ordering key: deciding the
// second first releases nothing; deciding the first releases all three in
// their original order (the rejected one dropped).
func TestReleaseKeepsOrderAcrossDecisions(t *testing.T) {
	db, err := pipedb.Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ob, err := outbox.OpenBolt(db, []string{"erp"})
	if err != nil {
		t.Fatal(err)
	}
	ap, err := OpenBolt(db)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	entry := func(id string) outbox.Entry {
		return outbox.Entry{Destination: "erp", IdempotencyKey: outbox.IdempotencyKey(id, "erp", "x"), Action: "x", OrderingKey: "order:1",
			Document: json.RawMessage(`{}`), CreatedAt: now, State: outbox.StatePending, Lineage: outbox.Lineage{EventID: id}}
	}
	var first, second *Approval
	err = db.Update(func(tx *bolt.Tx) error {
		if ap.BlockedTx(tx, "erp", "order:1") {
			t.Error("blocked before anything was held")
		}
		if first, err = ap.HoldTx(tx, entry("e1"), "r", "big", now); err != nil {
			return err
		}
		if !ap.BlockedTx(tx, "erp", "order:1") || ap.BlockedTx(tx, "erp", "order:2") {
			t.Error("blocking does not follow the ordering key")
		}
		e2 := entry("e2")
		v, _ := outbox.Encode(&e2)
		if err := ap.EnqueueTx(tx, "erp", "order:1", v); err != nil {
			return err
		}
		second, err = ap.HoldTx(tx, entry("e3"), "r", "big", now)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if ap.PendingCount() != 2 {
		t.Fatalf("pending %d", ap.PendingCount())
	}
	release := func(id uint64, approve bool) int {
		var n int
		err := db.Update(func(tx *bolt.Tx) error {
			a, err := ap.DecideTx(tx, id, approve, "ann", "", now)
			if err != nil {
				return err
			}
			app := ob.NewAppender(tx)
			n, err = ap.ReleaseTx(tx, a.Destination, a.OrderingKey, func(v []byte) (uint64, error) { return app.Append("erp", v) })
			if err != nil {
				return err
			}
			return app.Flush()
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := release(second.ID, false); n != 0 {
		t.Fatalf("deciding the second released %d", n)
	}
	_, waiting, _ := ap.Get(first.ID)
	if len(waiting) != 2 || waiting[0].EventID != "e2" || waiting[1].Kind != "held" {
		t.Fatalf("waiting %+v", waiting)
	}
	if n := release(first.ID, true); n != 2 {
		t.Fatalf("released %d, want 2", n)
	}
	es, _ := ob.Pending("erp", 0, 10)
	if len(es) != 2 || es[0].Lineage.EventID != "e1" || es[1].Lineage.EventID != "e2" || es[0].Lineage.Approval != first.ID {
		t.Fatalf("outbox %+v", es)
	}
	if ap.PendingCount() != 0 || ob.Depth("erp") != 2 {
		t.Fatalf("pending %d depth %d", ap.PendingCount(), ob.Depth("erp"))
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := ap.DecideTx(tx, first.ID, false, "bob", "", now)
		return err
	})
	if !errors.Is(err, ErrDecided) {
		t.Fatalf("second decision: %v", err)
	}
}
