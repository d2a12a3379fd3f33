package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/pipedb"
	"github.com/plantsync/plantsync/internal/boltkv"
)

func openTestOutbox(t testing.TB, dests ...string) (*pipedb.DB, *Bolt) {
	t.Helper()
	db, err := pipedb.Open(filepath.Join(t.TempDir(), "pipeline.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	b, err := OpenBolt(db, dests)
	if err != nil {
		t.Fatal(err)
	}
	return db, b
}

func appendTestEntries(t testing.TB, db *pipedb.DB, b *Bolt, dest string, n int) {
	t.Helper()
	at := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	err := db.Update(func(tx *bolt.Tx) error {
		app := b.NewAppender(tx)
		for i := range n {
			id := "ev-" + string(rune('a'+i))
			v, err := Encode(&Entry{Destination: dest, IdempotencyKey: IdempotencyKey(id, dest, "raise_alert"), Action: "raise_alert",
				OrderingKey: "k", Document: json.RawMessage(`{"n":1}`), CreatedAt: at, State: StatePending,
				Lineage: Lineage{EventID: id, CorrelationID: "c-" + id, Crosswalks: map[string]uint64{"item": 2}, ProcessedAt: at}})
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
		t.Fatal(err)
	}
}

func rawEntries(t *testing.T, db *pipedb.DB, dest string) map[uint64][]byte {
	t.Helper()
	out := map[uint64][]byte{}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).Bucket([]byte(dest)).Bucket(bucketEntries).ForEach(func(k, v []byte) error {
			out[boltkv.ToU64(k)] = bytes.Clone(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// CompleteSnapshotsTx stores exactly what CompleteTx stores, whether the
// entries were changed after they were read or not.
func TestCompleteSnapshotsMatchesComplete(t *testing.T) {
	at := time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		// change runs between reading the snapshots and completing them.
		change      func(t *testing.T, db *pipedb.DB, b *Bolt)
		reorder     bool
		wantDepth   int
		wantStates  map[uint64]State
		wantMessage map[uint64]string
	}{
		{name: "unchanged", wantDepth: 0,
			wantStates: map[uint64]State{1: StateDelivered, 2: StateDelivered, 3: StateFailed}},
		{name: "outcomes in another order", reorder: true, wantDepth: 0,
			wantStates: map[uint64]State{1: StateDelivered, 2: StateDelivered, 3: StateFailed}},
		{name: "completed meanwhile", wantDepth: 0,
			change: func(t *testing.T, db *pipedb.DB, b *Bolt) {
				// Another deliverer completed entry 2 first: it must stay
				// as that one recorded it.
				if err := b.Complete("alerts", []Outcome{{Seq: 2, State: StateFailed, Message: "first", Attempts: 4, At: at}}); err != nil {
					t.Fatal(err)
				}
			},
			wantStates:  map[uint64]State{1: StateDelivered, 2: StateFailed, 3: StateFailed},
			wantMessage: map[uint64]string{2: "first"}},
		{name: "rewritten while pending", wantDepth: 0,
			change: func(t *testing.T, db *pipedb.DB, b *Bolt) {
				err := db.Update(func(tx *bolt.Tx) error {
					e, err := b.GetTx(tx, "alerts", 1)
					if err != nil {
						return err
					}
					e.OrderingKey = "changed"
					return b.PutTx(tx, &e)
				})
				if err != nil {
					t.Fatal(err)
				}
			},
			wantStates: map[uint64]State{1: StateDelivered, 2: StateDelivered, 3: StateFailed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stored [2]map[uint64][]byte
			for run, snapshots := range []bool{false, true} {
				db, b := openTestOutbox(t, "alerts")
				var failed []uint64
				b.OnFailed = func(tx *bolt.Tx, e *Entry) error {
					failed = append(failed, e.Seq)
					return nil
				}
				appendTestEntries(t, db, b, "alerts", 3)
				snaps, err := b.PendingSnapshots("alerts", 0, 10)
				if err != nil || len(snaps) != 3 {
					t.Fatalf("snapshots: %d, %v", len(snaps), err)
				}
				if tc.change != nil {
					tc.change(t, db, b)
					failed = nil
				}
				outcomes := []Outcome{
					{Seq: 1, State: StateDelivered, ExternalRef: "r1", Attempts: 1, At: at},
					{Seq: 2, State: StateDelivered, ExternalRef: "r2", Attempts: 1, At: at},
					{Seq: 3, State: StateFailed, Message: "boom", Attempts: 2, At: at},
				}
				if tc.reorder {
					outcomes[0], outcomes[2] = outcomes[2], outcomes[0]
				}
				var seen []uint64
				each := func(e *Entry) error {
					seen = append(seen, e.Seq)
					e.ExternalRef += "+each"
					return nil
				}
				err = db.Update(func(tx *bolt.Tx) error {
					if snapshots {
						return b.CompleteSnapshotsTx(tx, "alerts", snaps, outcomes, each)
					}
					return b.CompleteTx(tx, "alerts", outcomes, each)
				})
				if err != nil {
					t.Fatal(err)
				}
				if got := b.Depth("alerts"); got != tc.wantDepth {
					t.Errorf("snapshots=%v: depth %d, want %d", snapshots, got, tc.wantDepth)
				}
				if len(failed) != 1 || failed[0] != 3 {
					t.Errorf("snapshots=%v: OnFailed ran for %v, want [3]", snapshots, failed)
				}
				for seq, want := range tc.wantStates {
					e, err := b.Get("alerts", seq)
					if err != nil {
						t.Fatal(err)
					}
					if e.State != want {
						t.Errorf("snapshots=%v: entry %d state %s, want %s", snapshots, seq, e.State, want)
					}
					if msg, ok := tc.wantMessage[seq]; ok && e.Message != msg {
						t.Errorf("snapshots=%v: entry %d message %q, want %q", snapshots, seq, e.Message, msg)
					}
				}
				if tc.name == "rewritten while pending" {
					if e, _ := b.Get("alerts", 1); e.OrderingKey != "changed" || e.ExternalRef != "r1+each" {
						t.Errorf("snapshots=%v: the rewrite made while pending was lost: %+v", snapshots, e)
					}
				}
				if len(seen) == 0 {
					t.Errorf("snapshots=%v: each never ran", snapshots)
				}
				stored[run] = rawEntries(t, db, "alerts")
			}
			for seq, v := range stored[0] {
				if !bytes.Equal(v, stored[1][seq]) {
					t.Errorf("entry %d differs:\n CompleteTx          %s\n CompleteSnapshotsTx %s", seq, v, stored[1][seq])
				}
			}
		})
	}
}

// A snapshot never resurrects an entry that is gone.
func TestCompleteSnapshotsMissingEntry(t *testing.T) {
	db, b := openTestOutbox(t, "log")
	appendTestEntries(t, db, b, "log", 1)
	snaps, err := b.PendingSnapshots("log", 0, 10)
	if err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots: %d, %v", len(snaps), err)
	}
	snaps[0].Seq = 9
	err = db.Update(func(tx *bolt.Tx) error {
		return b.CompleteSnapshotsTx(tx, "log", snaps, []Outcome{{Seq: 9, State: StateDelivered}}, nil)
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err %v, want ErrNotFound", err)
	}
}
