package buffer

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// A full disk must behave like the block policy: appends wait, Stats says
// degraded, nothing committed is lost, and once space returns the held
// append commits. The kernel's file-size limit (RLIMIT_FSIZE) stands in for
// a full disk: writes past it fail with EFBIG just as they would with
// ENOSPC, and no root is needed to set it.
func TestDiskFullHoldsAppendsAndCorruptsNothing(t *testing.T) {
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "b.db")
	b := openTest(t, path, nil)
	ctx := context.Background()
	st0, _ := fileSize(path)

	limit := old
	limit.Cur = uint64(st0) + 256<<10
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()

	var committed uint64
	held := make(chan error, 1)
	for i := 0; ; i++ {
		if i > 100000 {
			t.Fatal("the file-size limit never stopped an append")
		}
		c := make(chan error, 1)
		evs := []*pbEvent{testEvent(i), testEvent(i + 1)}
		go func() {
			_, last, err := b.Append(ctx, evs...)
			if err == nil {
				committed = last
			}
			c <- err
		}()
		select {
		case err := <-c:
			if err != nil {
				t.Fatalf("append failed instead of waiting: %v", err)
			}
			continue
		case <-time.After(500 * time.Millisecond):
			held = c
		}
		break
	}
	st := b.Stats()
	if st.Degraded == "" {
		t.Fatalf("stats do not report the failing disk: %+v", st)
	}
	restore()
	select {
	case err := <-held:
		if err != nil {
			t.Fatalf("held append after space returned: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held append did not commit after space returned")
	}
	if b.Stats().Degraded != "" {
		t.Fatal("still degraded after a successful commit")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTest(t, path, nil)
	defer b.Close()
	batch, err := b.ReadAfter(0, 1<<20, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if batch.First != 1 || batch.Last != committed || uint64(len(batch.Events)) != committed {
		t.Fatalf("after reopen: %d..%d (%d events); committed through %d", batch.First, batch.Last, len(batch.Events), committed)
	}
}

type pbEvent = pb.Event

func fileSize(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
