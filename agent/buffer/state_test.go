package buffer

import (
	"context"
	"path/filepath"
	"testing"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

func TestSourceStateCommitsWithEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.db")
	b := openTest(t, path, nil)
	done := make(chan error, 1)
	err := b.AppendWithState(context.Background(), []*pb.Event{testEvent(1)},
		[]StateWrite{{Source: "mes", Key: []byte("hash-1"), Value: []byte("event-id-1")}, {Source: "mes", Key: []byte("hash-0"), Value: nil}},
		func(first, last uint64, err error) {
			if err == nil && (first != 1 || last != 1) {
				t.Errorf("sequences %d..%d", first, last)
			}
			done <- err
		})
	if err != nil || <-done != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTest(t, path, nil)
	defer b.Close()
	got := map[string]string{}
	if err := b.ReadState("mes", func(k, v []byte) error { got[string(k)] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["hash-1"] != "event-id-1" {
		t.Fatalf("state after reopen = %v", got)
	}
	if err := b.ReadState("other", func(k, v []byte) error { t.Fatal("other source sees state"); return nil }); err != nil {
		t.Fatal(err)
	}
}
