package pipedb

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestOpenRefusesBrokenFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(empty); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("empty file: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(garbage); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage file: %v", err)
	}
	newer := filepath.Join(dir, "newer.db")
	db, err := Open(newer)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.DB.Update(func(tx *bolt.Tx) error { return Meta(tx).Put(keyFormat, []byte("99")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(newer); err == nil || !strings.Contains(err.Error(), "upgrade the hub") {
		t.Fatalf("newer format: %v", err)
	}
}

type hooks struct{ committed, discarded int }

func (h *hooks) Committed() { h.committed++ }
func (h *hooks) Discard()   { h.discarded++ }

func TestHooksFollowTheOutcome(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h := &hooks{}
	db.Register(h)
	_ = db.Update(func(*bolt.Tx) error { return nil })
	_ = db.Update(func(*bolt.Tx) error { return errors.New("no") })
	if h.committed != 1 || h.discarded != 1 {
		t.Fatalf("hooks %+v", h)
	}
}
