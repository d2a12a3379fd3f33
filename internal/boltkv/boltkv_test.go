package boltkv

import (
	"bytes"
	"testing"
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
