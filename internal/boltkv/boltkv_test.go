package boltkv

import (
	"bytes"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestU64RoundTripAndOrder(t *testing.T) {
	for _, v := range []uint64{0, 1, 255, 256, 1 << 40, ^uint64(0)} {
		if got := ToU64(U64(v)); got != v {
			t.Fatalf("round trip %d = %d", v, got)
		}
	}
	if bytes.Compare(U64(255), U64(256)) >= 0 {
		t.Fatal("encoding does not sort numerically")
	}
	if ToU64([]byte{1, 2, 3}) != 0 || ToU64(nil) != 0 {
		t.Fatal("malformed values must read as 0")
	}
}

func TestNextU64CountsFromOne(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "t.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		for want := uint64(1); want <= 3; want++ {
			got, err := NextU64(bk, []byte("next"))
			if err != nil || got != want {
				t.Fatalf("NextU64 = %d, %v; want %d", got, err, want)
			}
		}
		if GetU64(bk, []byte("next")) != 3 {
			t.Fatalf("stored %d, want 3", GetU64(bk, []byte("next")))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
