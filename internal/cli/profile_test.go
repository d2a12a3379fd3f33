package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartCPUProfile(t *testing.T) {
	stop, err := StartCPUProfile("")
	if err != nil {
		t.Fatalf("empty path: %v", err)
	}
	stop() // profiles nothing, must not panic

	path := filepath.Join(t.TempDir(), "cpu.prof")
	stop, err = StartCPUProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("profile %s: %v, size %v", path, err, fi)
	}

	_, err = StartCPUProfile(filepath.Join(t.TempDir(), "missing", "cpu.prof"))
	if err == nil || !strings.Contains(err.Error(), "-cpuprofile") {
		t.Fatalf("unwritable path: %v, want an error naming -cpuprofile", err)
	}
}
