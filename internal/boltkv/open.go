package boltkv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// OpenSpec words the failures of Open for one kind of file.
type OpenSpec struct {
	// What names the file in messages: "journal", "buffer".
	What string
	// Corrupt is the package's error for a file that is not a whole bbolt
	// file; Open wraps it.
	Corrupt error
	// Owner says who else may hold the lock: "is another hub running with
	// the same storage.dir?".
	Owner string
	// Aside says what moving a damaged file aside costs: "to start an
	// empty journal".
	Aside string
}

// Open opens or creates the bbolt file at path (and its folder) with opts,
// and turns what an operator can meet into errors that name the file and
// the fix instead of a crash: the file locked by another process; an empty
// file (a torn first write); a file shorter than its metadata says
// (truncated: bbolt would read pages beyond its end, which faults, and a
// fault is a fatal crash, not an error); other damage (a fault bbolt hits
// while opening becomes a panic that Open reports). Files with
// NoFreelistSync rebuild their freelist in a goroutine of bbolt's where a
// fault still crashes; only the truncation check protects them. After a
// recovered panic the file handle bbolt opened (and its lock) is not
// released: the caller reports the error and the program exits.
func Open(path string, opts *bolt.Options, spec OpenSpec) (db *bolt.DB, err error) {
	aside := fmt.Sprintf("move it aside %s", spec.Aside)
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %s: %v; %s", spec.Corrupt, path, r, aside)
		}
	}()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create the %s folder: %w", spec.What, err)
	}
	if st, statErr := os.Stat(path); statErr == nil {
		fileSize := st.Size()
		if fileSize == 0 {
			return nil, fmt.Errorf("%w: %s is empty (a torn first write?); %s", spec.Corrupt, path, aside)
		}
		if want, ok := metaSize(path); ok && want > fileSize {
			return nil, fmt.Errorf("%w: %s is truncated: %d bytes on disk, its metadata needs %d; %s", spec.Corrupt, path, fileSize, want, aside)
		}
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = bolt.Open(path, 0o600, opts)
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open %s %s: locked by another process (%s): %w", spec.What, path, spec.Owner, err)
		}
		return nil, fmt.Errorf("%w: open %s: %v; %s", spec.Corrupt, path, err, aside)
	}
	return db, nil
}

// metaSize reads bbolt's two meta pages the way bbolt does (the valid one
// with the higher transaction id wins) and returns the file size it records:
// high-water page times page size. ok is false when neither meta page is
// valid; bolt.Open reports that.
func metaSize(path string) (size int64, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	// bbolt v1 layout: a 16-byte page header, then the meta fields in
	// native byte order: magic, version, page size, flags (uint32), root
	// bucket (16 bytes), freelist, high-water page, txid, checksum (FNV-64a
	// of the 56 bytes before it).
	read := func(off int64) (pageSize, hwm, txid uint64, ok bool) {
		b := make([]byte, 16+64)
		if _, err := f.ReadAt(b, off); err != nil {
			return 0, 0, 0, false
		}
		m, ne := b[16:], binary.NativeEndian
		h := fnv.New64a()
		_, _ = h.Write(m[:56])
		if ne.Uint32(m[0:]) != 0xED0CDAED || ne.Uint32(m[4:]) != 2 || h.Sum64() != ne.Uint64(m[56:]) {
			return 0, 0, 0, false
		}
		return uint64(ne.Uint32(m[8:])), ne.Uint64(m[40:]), ne.Uint64(m[48:]), true
	}
	ps0, hwm0, tx0, ok0 := read(0)
	second := int64(ps0)
	if !ok0 {
		second = int64(os.Getpagesize())
	}
	ps1, hwm1, tx1, ok1 := read(second)
	switch {
	case ok0 && (!ok1 || tx0 >= tx1):
		return int64(hwm0 * ps0), true
	case ok1:
		return int64(hwm1 * ps1), true
	}
	return 0, false
}
