package boltkv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var errTestCorrupt = errors.New("test file is corrupt")

var testSpec = OpenSpec{What: "test file", Corrupt: errTestCorrupt, Owner: "is another test running?", Aside: "to start over"}

// makeFile writes a bbolt file of a few hundred KB (many pages, a
// freelist past the first pages).
func makeFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "f.db")
	db, err := Open(path, &bolt.Options{Timeout: time.Second}, testSpec)
	if err != nil {
		t.Fatal(err)
	}
	for b := range 20 {
		err := db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			for i := range 100 {
				if err := bk.Put(fmt.Appendf(nil, "k-%d-%d", b, i), make([]byte, 300)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// A damaged file gives the package's error naming the file and the fix,
// never a crash, and is left as it was; a locked one names who may hold it.
func TestOpenDamagedAndLockedFiles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string
	}{
		{"truncated", func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			if err := os.Truncate(path, st.Size()/3); err != nil {
				t.Fatal(err)
			}
		}, "is truncated"},
		{"empty", func(t *testing.T, path string) { _ = os.Truncate(path, 0) }, "is empty"},
		{"garbage header", func(t *testing.T, path string) {
			f, _ := os.OpenFile(path, os.O_WRONLY, 0)
			_, _ = f.WriteAt(make([]byte, 8192), 0)
			_ = f.Close()
		}, "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := makeFile(t)
			tc.damage(t, path)
			before, _ := os.ReadFile(path)
			_, err := Open(path, &bolt.Options{Timeout: time.Second}, testSpec)
			if !errors.Is(err, errTestCorrupt) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) ||
				!strings.Contains(err.Error(), "move it aside to start over") {
				t.Fatalf("open: %v; want %v naming %s, %q and the fix", err, errTestCorrupt, path, tc.want)
			}
			if after, _ := os.ReadFile(path); string(before) != string(after) {
				t.Fatal("open changed the damaged file")
			}
		})
	}
	t.Run("locked", func(t *testing.T) {
		path := makeFile(t)
		db, err := Open(path, &bolt.Options{Timeout: time.Second}, testSpec)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		_, err = Open(path, &bolt.Options{Timeout: 100 * time.Millisecond}, testSpec)
		if !errors.Is(err, bolt.ErrTimeout) || !strings.Contains(err.Error(), "locked by another process (is another test running?)") {
			t.Fatalf("open of a locked file: %v", err)
		}
	})
}
