//go:build unix

package pki

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	// A permissive umask must not loosen key files, and a strict one must
	// not hide certificates from the service user.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	dir := t.TempDir()
	path := filepath.Join(dir, "f.pem")
	for i, tc := range []struct {
		data string
		perm fs.FileMode
	}{
		{"first", CertFileMode},
		{"second", KeyFileMode},
	} {
		if err := WriteFileAtomic(path, []byte(tc.data), tc.perm); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.data {
			t.Errorf("write %d: content %q, want %q", i, got, tc.data)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != tc.perm {
			t.Errorf("write %d: mode %04o, want %04o", i, fi.Mode().Perm(), tc.perm)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	err = WriteFileAtomic(filepath.Join(dir, "no", "such", "dir", "f"), []byte("x"), CertFileMode)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("write into a missing directory: err = %v, want fs.ErrNotExist", err)
	}
}
