package buffer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testEvent(i int) *pb.Event {
	return &pb.Event{
		Id:    fmt.Sprintf("ev-%06d", i),
		Plant: "DE-01",
		Type:  "production.completion",
		Payload: &pb.Event_ProductionCompletion{ProductionCompletion: &pb.ProductionCompletion{
			Order: "PO-1001", Item: "P-4711", Good: &pb.Quantity{Value: "12", Unit: "EA"},
		}},
	}
}

func openTest(t *testing.T, path string, mutate func(*Config)) *Buffer {
	t.Helper()
	cfg := NewDefaultConfig()
	cfg.CommitInterval = time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := Open(path, cfg, Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return b
}

func decode(t *testing.T, raw []byte) *pb.Event {
	t.Helper()
	var ev pb.Event
	if err := proto.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return &ev
}

func TestAppendReadAckReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	b := openTest(t, path, nil)
	if !b.NewEpoch() {
		t.Fatal("a new file must start a new epoch")
	}
	epoch := b.Epoch()
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		first, last, err := b.Append(ctx, testEvent(i))
		if err != nil || first != uint64(i) || last != uint64(i) {
			t.Fatalf("append %d: first=%d last=%d err=%v", i, first, last, err)
		}
	}
	batch, err := b.ReadAfter(0, 4, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if batch.First != 1 || batch.Last != 4 || len(batch.Events) != 4 {
		t.Fatalf("batch = %d..%d (%d events), want 1..4", batch.First, batch.Last, len(batch.Events))
	}
	if ev := decode(t, batch.Events[2]); ev.GetSequence() != 3 || ev.GetId() != "ev-000003" {
		t.Fatalf("third event = seq %d id %s", ev.GetSequence(), ev.GetId())
	}
	b.Ack(4)
	// An append after the ack commits the deletion in the same group.
	if _, _, err := b.Append(ctx, testEvent(11)); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Events != 7 || st.AckedThrough != 4 || st.LastSeq != 11 {
		t.Fatalf("stats after ack = %+v, want 7 events, acked 4, last 11", st)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	b = openTest(t, path, nil)
	defer b.Close()
	if b.NewEpoch() || b.Epoch() != epoch {
		t.Fatalf("reopen changed the epoch: %s -> %s", epoch, b.Epoch())
	}
	st := b.Stats()
	if st.Events != 7 || st.LastSeq != 11 || st.AckedThrough != 4 {
		t.Fatalf("stats after reopen = %+v", st)
	}
	first, _, err := b.Append(ctx, testEvent(12))
	if err != nil || first != 12 {
		t.Fatalf("sequence after reopen = %d, %v; want 12", first, err)
	}
	batch, _ = b.ReadAfter(4, 100, 1<<20)
	if batch.First != 5 || batch.Last != 12 || len(batch.Events) != 8 {
		t.Fatalf("after reopen batch = %d..%d (%d)", batch.First, batch.Last, len(batch.Events))
	}
}

func TestBlockPolicyHoldsAppendsUntilAck(t *testing.T) {
	b := openTest(t, filepath.Join(t.TempDir(), "b.db"), func(c *Config) { c.MaxBytes = 64 << 10 })
	defer b.Close()
	ctx := context.Background()
	// Append until one append is held; bytes per event are known only to
	// the buffer, so let it tell where full is.
	var done chan error
	for i := 1; ; i++ {
		if i > 2000 {
			t.Fatal("a 64 KiB buffer took 2000 events without blocking")
		}
		c := make(chan error, 1)
		go func() {
			_, _, err := b.Append(ctx, testEvent(i))
			c <- err
		}()
		select {
		case err := <-c:
			if err != nil {
				t.Fatal(err)
			}
			continue
		case <-time.After(300 * time.Millisecond):
		}
		done = c
		break
	}
	if !b.Stats().Blocked {
		t.Fatal("stats must report blocked")
	}
	b.Ack(10)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("append still held after the hub acked")
	}
	if b.Stats().DroppedTotal != 0 {
		t.Fatal("block must never drop")
	}
}

func TestCloseFailsHeldAppends(t *testing.T) {
	b := openTest(t, filepath.Join(t.TempDir(), "b.db"), func(c *Config) { c.MaxBytes = 64 << 10 })
	ctx := context.Background()
	var held []*pb.Event
	for i := 0; i < 2000; i++ {
		held = append(held, testEvent(i))
	}
	// Fill the buffer, then one more that must wait.
	_ = b.AppendAsync(ctx, held[:200], func(_, _ uint64, err error) {})
	errc := make(chan error, 1)
	if err := b.AppendAsync(ctx, held[200:2000], func(_, _ uint64, err error) { errc <- err }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("held append ended with %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("held append never completed after Close")
	}
	if err := b.AppendAsync(ctx, held[:1], func(_, _ uint64, _ error) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close = %v, want ErrClosed", err)
	}
}

// With drop_oldest the hub must be able to account for every sequence: it
// either receives the event or a buffer.overflow report naming it.
func TestDropOldestReportsExactlyWhatIsMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	b := openTest(t, path, func(c *Config) { c.MaxBytes = 64 << 10; c.Overflow = OverflowDropOldest })
	ctx := context.Background()
	const n = 1500
	b.MarkSent(10) // in flight to the hub: never dropped
	for i := 1; i <= n; i++ {
		if _, _, err := b.Append(ctx, testEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	st := b.Stats()
	if st.DroppedTotal == 0 {
		t.Fatal("nothing dropped; the test buffer is too large")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTest(t, path, func(c *Config) { c.MaxBytes = 64 << 10; c.Overflow = OverflowDropOldest })
	defer b.Close()
	batch, err := b.ReadAfter(0, 1<<20, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]string{}
	sourceEvents := 0
	for _, raw := range batch.Events {
		ev := decode(t, raw)
		seen[ev.GetSequence()] = "stored"
		if ev.GetType() == overflowEventType {
			for _, rg := range ev.GetBufferOverflow().GetDropped() {
				for s := rg.First; s <= rg.Last; s++ {
					if seen[s] != "" {
						t.Fatalf("sequence %d reported dropped and %s", s, seen[s])
					}
					seen[s] = "dropped"
				}
			}
		} else {
			sourceEvents++
		}
	}
	for s := uint64(1); s <= b.Stats().LastSeq; s++ {
		if seen[s] == "" {
			t.Fatalf("sequence %d neither stored nor reported dropped", s)
		}
	}
	for s := uint64(1); s <= 10; s++ {
		if seen[s] != "stored" {
			t.Fatalf("in-flight sequence %d was dropped", s)
		}
	}
	if sourceEvents == n {
		t.Fatal("no source event missing; nothing to account for")
	}
	if batch.Events == nil || len(seen) != int(b.Stats().LastSeq) {
		t.Fatalf("accounted %d sequences, last is %d", len(seen), b.Stats().LastSeq)
	}
}

func TestCorruptFilesAreRefusedNotEmptied(t *testing.T) {
	makeFile := func(t *testing.T) string {
		path := filepath.Join(t.TempDir(), "b.db")
		b := openTest(t, path, nil)
		evs := make([]*pb.Event, 3000)
		for i := range evs {
			evs[i] = testEvent(i)
		}
		if _, _, err := b.Append(context.Background(), evs...); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		return path
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   error
	}{
		{"truncated", func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			if err := os.Truncate(path, st.Size()/2); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt},
		{"empty", func(t *testing.T, path string) { _ = os.Truncate(path, 0) }, ErrCorrupt},
		{"garbage header", func(t *testing.T, path string) {
			f, _ := os.OpenFile(path, os.O_WRONLY, 0)
			_, _ = f.WriteAt(make([]byte, 8192), 0)
			_ = f.Close()
		}, ErrCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := makeFile(t)
			tc.damage(t, path)
			before, _ := os.ReadFile(path)
			_, err := Open(path, NewDefaultConfig(), Options{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("open damaged file: %v, want %v", err, tc.want)
			}
			after, _ := os.ReadFile(path)
			if string(before) != string(after) {
				t.Fatal("open modified the damaged file")
			}
		})
	}
}

func TestNewerFormatRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	b := openTest(t, path, nil)
	_ = b.Close()
	db, err := openBolt(path, NewDefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *boltTx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte("99")) }); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := Open(path, NewDefaultConfig(), Options{}); !errors.Is(err, ErrNewerFormat) {
		t.Fatalf("open newer file: %v", err)
	}
}

func TestConcurrentAppendsGetDistinctOrderedSequences(t *testing.T) {
	b := openTest(t, filepath.Join(t.TempDir(), "b.db"), nil)
	defer b.Close()
	ctx := context.Background()
	const writers, each = 8, 200
	res := make(chan uint64, writers*each)
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				f, _, err := b.Append(ctx, testEvent(i))
				if err != nil {
					errs <- err
					return
				}
				res <- f
			}
			errs <- nil
		}()
	}
	for w := 0; w < writers; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(res)
	var seqs []uint64
	for s := range res {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("sequences have a gap or repeat at %d: %d", i, s)
		}
	}
}

type boltTx = bolt.Tx

// An event that cannot be encoded is refused to its source at once and
// nothing of that append is queued; later appends commit as usual.
func TestInvalidEventRefusedWithoutWedgingCommits(t *testing.T) {
	b := openTest(t, filepath.Join(t.TempDir(), "b.db"), nil)
	defer b.Close()
	ctx := context.Background()
	bad := testEvent(1)
	bad.Plant = "DE-\xff" // proto3 strings must be valid UTF-8
	if _, _, err := b.Append(ctx, testEvent(0), bad); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("append with an unencodable event: %v, want ErrInvalidEvent", err)
	}
	first, last, err := b.Append(ctx, testEvent(2))
	if err != nil || first != 1 || last != 1 {
		t.Fatalf("next append: %d..%d %v; want sequence 1 (nothing of the refused append stored)", first, last, err)
	}
	batch, _ := b.ReadAfter(0, 10, 1<<20)
	if ev := decode(t, batch.Events[0]); ev.GetSequence() != 1 || ev.GetId() != "ev-000002" {
		t.Fatalf("stored event: seq %d id %s", ev.GetSequence(), ev.GetId())
	}
}
