package pipeline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/hub/journal"
	"github.com/plantsync/plantsync/internal/boltkv"
	"github.com/plantsync/plantsync/internal/testclock"
	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

const crashChildEnv = "PLANTSYNC_PIPELINE_CRASH_CHILD"

// crashChild runs the pipeline over the journal in dir until it is killed.
func crashChild(dir string) {
	j, err := journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(dir, "journal.db")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cfg := testConfig()
	cfg.BatchSize = 3 // many commits, so kills land between them
	p, err := New(Options{Config: cfg, Dir: dir, Journal: j, Destinations: testDests(), Now: func() time.Time { return clockAt }})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := p.Start(context.Background()); err != nil {
		os.Exit(2)
	}
	select {}
}

// readCursor reads the committed cursor of a pipeline.db nobody holds.
func readCursor(t *testing.T, dir string) uint64 {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, "pipeline.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var c uint64
	_ = db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("meta")); b != nil {
			c = boltkv.GetU64(b, keyCursor)
		}
		return nil
	})
	return c
}

// The pipeline process is killed (SIGKILL) at arbitrary points while it
// commits; after each restart the outbox holds every event's entry exactly
// once: the cursor and the entries are one transaction.
func TestKilledMidStreamNeverSkipsOrDoubles(t *testing.T) {
	dir := t.TempDir()
	j, err := journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(dir, "journal.db")})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, journal: j}
	const n = 3000
	evs := make([]*pb.Event, n)
	for i := range n {
		evs[i] = completion(fmt.Sprintf("k-%05d", i), fmt.Sprintf("PO-%d", i%5), "P-4711", "1")
	}
	last := e.journalEvents(evs...)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	midway := 0
	// A busy machine starts the child slowly: wait longer after a round
	// that made no progress.
	delay := time.Duration(150+rand.IntN(250)) * time.Millisecond
	for round := 0; round < 10 && midway < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run", "^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		c := readCursor(t, dir)
		switch {
		case c > 0 && c < last:
			midway++
		case c == 0:
			delay = min(2*delay, 10*time.Second)
		}
		if c >= last {
			break
		}
	}
	if midway == 0 {
		t.Fatal("no kill landed while the pipeline was mid-stream")
	}
	// Finish in this process and count.
	j, err = journal.OpenBolt(journal.BoltOptions{Path: filepath.Join(dir, "journal.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	e.journal = j
	e.clock = testclock.New(clockAt)
	e.open(testConfig())
	e.waitCursor(last)
	seen := map[string]int{}
	for _, en := range allEntries(t, e.p, DestERP) {
		seen[en.Lineage.EventID]++
	}
	for _, ev := range evs {
		if seen[ev.GetId()] != 1 {
			t.Fatalf("event %s has %d outbox entries after %d mid-stream kills", ev.GetId(), seen[ev.GetId()], midway)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d events in the outbox, want %d", len(seen), n)
	}
	t.Logf("%d kills landed mid-stream", midway)
}
