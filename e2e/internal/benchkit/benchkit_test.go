package benchkit

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestMedianThousandsTail(t *testing.T) {
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median of 3 = %v", got)
	}
	if got := Median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median of 4 = %v, want the mean of the middle two", got)
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("median of nothing is not NaN")
	}
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1 000", 43879.4: "43 879", 1234567: "1 234 567", -1000: "-1 000"} {
		if got := Thousands(v, ' '); got != want {
			t.Errorf("Thousands(%v) = %q, want %q", v, got, want)
		}
	}
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("a\nb\nc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := Tail(path, 2); got != "b\nc" {
		t.Errorf("Tail = %q", got)
	}
	if got := ProcCPU(os.Getpid()); got < 0 {
		t.Errorf("ProcCPU = %v", got)
	}
}
