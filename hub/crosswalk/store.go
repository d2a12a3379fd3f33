package crosswalk

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/plantsync/plantsync/internal/boltkv"
)

// ErrCorrupt marks a crosswalk store that failed its checks on open.
var ErrCorrupt = errors.New("crosswalk store is corrupt")

var (
	bucketTables  = []byte("tables")
	bucketHistory = []byte("history")
)

// Change is one entry of a table's audit trail.
type Change struct {
	Version uint64      `json:"version"`
	At      time.Time   `json:"at"`
	Subject string      `json:"subject"`
	Action  string      `json:"action"` // load, replace or upsert
	Source  string      `json:"source,omitempty"`
	Added   []Row       `json:"added,omitempty"`
	Removed []Row       `json:"removed,omitempty"`
	Updated []RowUpdate `json:"updated,omitempty"`
}

// RowUpdate is a row whose values changed under the same key.
type RowUpdate struct {
	Before Row `json:"before"`
	After  Row `json:"after"`
}

// Options configure Open.
type Options struct {
	Path   string
	Specs  []Spec
	Logger *slog.Logger
	Now    func() time.Time
}

// Store keeps crosswalk tables and their history in a bbolt file and
// serves immutable snapshots for lookups.
type Store struct {
	db    *bolt.DB
	log   *slog.Logger
	now   func() time.Time
	specs map[string]Spec
	names []string

	mu  sync.Mutex // serialises writers so snapshots follow commits in order
	set atomic.Pointer[Set]
}

// Open opens or creates the store and loads every table.
func Open(opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	db, err := boltkv.Open(opts.Path, &bolt.Options{Timeout: 2 * time.Second},
		boltkv.OpenSpec{What: "crosswalks", Corrupt: ErrCorrupt, Owner: "is another hub running with the same storage.dir?",
			Aside: "to start from the configured CSV files (changes made through the API are then lost)"})
	if err != nil {
		return nil, err
	}
	s := &Store{db: db, log: opts.Logger, now: opts.Now, specs: map[string]Spec{}}
	for _, sp := range opts.Specs {
		s.specs[sp.Name] = sp
		s.names = append(s.names, sp.Name)
	}
	sort.Strings(s.names)
	set := &Set{tables: map[string]*Table{}}
	err = db.Update(func(tx *bolt.Tx) error {
		tb, err := tx.CreateBucketIfNotExists(bucketTables)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketHistory); err != nil {
			return err
		}
		return tb.ForEach(func(k, v []byte) error {
			sp, ok := s.specs[string(k)]
			if !ok {
				// A destination was removed from the config: keep its
				// tables on disk, but they take no part in mapping.
				return nil
			}
			t := &Table{Spec: sp}
			if err := json.Unmarshal(v, t); err != nil {
				return fmt.Errorf("%w: table %s: %v", ErrCorrupt, k, err)
			}
			t.build()
			set.tables[sp.Name] = t
			return nil
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s.set.Store(set)
	return s, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Snapshot is the current set of tables; it never changes.
func (s *Store) Snapshot() *Set { return s.set.Load() }

// Specs lists every table spec, sorted by name.
func (s *Store) Specs() []Spec {
	out := make([]Spec, len(s.names))
	for i, n := range s.names {
		out[i] = s.specs[n]
	}
	return out
}

// Spec returns a table's spec.
func (s *Store) Spec(name string) (Spec, error) {
	sp, ok := s.specs[name]
	if !ok {
		return Spec{}, fmt.Errorf("%w %q", ErrUnknownTable, name)
	}
	return sp, nil
}

// Table returns the current version of a table; a table that was never
// created comes back at version 0 with no rows and exists false.
func (s *Store) Table(name string) (t *Table, exists bool, err error) {
	sp, err := s.Spec(name)
	if err != nil {
		return nil, false, err
	}
	if t, ok := s.Snapshot().Table(name); ok {
		return t, true, nil
	}
	return &Table{Spec: sp, Rows: []Row{}}, false, nil
}

// Load seeds a table from a CSV file's rows at startup. An unchanged file
// (same SHA-256 as last loaded) keeps the stored table with its API edits;
// a changed one replaces it as a new version attributed to the file.
func (s *Store) Load(name, file, hash string, rows []Row) (changed bool, err error) {
	sp, err := s.Spec(name)
	if err != nil {
		return false, err
	}
	if cur, ok := s.Snapshot().Table(name); ok && cur.SourceHash == hash {
		return false, nil
	}
	t, ch, err := s.write(sp, "config:"+file, "load", func(cur *Table) ([]Row, error) { return rows, nil }, func(t *Table) {
		t.Source, t.SourceHash = file, hash
	})
	if err != nil {
		return false, err
	}
	s.log.Info("crosswalk loaded from file", "table", name, "file", file, "version", t.Version,
		"rows", len(t.Rows), "added", len(ch.Added), "removed", len(ch.Removed), "updated", len(ch.Updated))
	return true, nil
}

// Replace sets a table's rows. ifMatch must be the current version (0 for
// a table that does not exist yet), or ErrVersionMismatch.
func (s *Store) Replace(name string, ifMatch uint64, rows []Row, subject string) (*Table, error) {
	sp, err := s.Spec(name)
	if err != nil {
		return nil, err
	}
	if err := CheckRows(sp, rows); err != nil {
		return nil, err
	}
	t, _, err := s.write(sp, subject, "replace", func(cur *Table) ([]Row, error) {
		if cur.Version != ifMatch {
			return nil, fmt.Errorf("%w: table %s is at version %d, If-Match says %d; GET it again and reapply your change", ErrVersionMismatch, name, cur.Version, ifMatch)
		}
		return rows, nil
	}, nil)
	return t, err
}

// Upsert adds rows, or replaces rows with the same key and effective_from.
func (s *Store) Upsert(name string, rows []Row, subject string) (*Table, error) {
	sp, err := s.Spec(name)
	if err != nil {
		return nil, err
	}
	if err := CheckRows(sp, rows); err != nil {
		return nil, err
	}
	t, _, err := s.write(sp, subject, "upsert", func(cur *Table) ([]Row, error) {
		idx := map[string]int{}
		out := make([]Row, len(cur.Rows))
		copy(out, cur.Rows)
		for i, r := range out {
			idx[sp.upsertKey(r)] = i
		}
		for _, r := range rows {
			if i, ok := idx[sp.upsertKey(r)]; ok {
				out[i] = r
			} else {
				idx[sp.upsertKey(r)] = len(out)
				out = append(out, r)
			}
		}
		return out, nil
	}, nil)
	return t, err
}

// write commits a new version and returns it.
func (s *Store) write(sp Spec, subject, action string, next func(cur *Table) ([]Row, error), decorate func(*Table)) (*Table, Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.Snapshot().Table(sp.Name)
	if !ok {
		cur = &Table{Spec: sp}
	}
	rows, err := next(cur)
	if err != nil {
		return nil, Change{}, err
	}
	ch := diff(sp, cur.Rows, rows)
	ch.Version, ch.At, ch.Subject, ch.Action = cur.Version+1, s.now().UTC(), subject, action
	t := &Table{Spec: sp, Version: ch.Version, UpdatedAt: ch.At, UpdatedBy: subject, Rows: cloneRows(rows), Source: cur.Source, SourceHash: cur.SourceHash}
	// An API edit keeps the file's hash: the next start reloads the file
	// only when the file itself changed, so API edits survive restarts.
	if decorate != nil {
		decorate(t)
		ch.Source = t.Source
	}
	t.build()
	tv, err := json.Marshal(t)
	if err != nil {
		return nil, Change{}, err
	}
	cv, err := json.Marshal(ch)
	if err != nil {
		return nil, Change{}, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketTables).Put([]byte(sp.Name), tv); err != nil {
			return err
		}
		hb, err := tx.Bucket(bucketHistory).CreateBucketIfNotExists([]byte(sp.Name))
		if err != nil {
			return err
		}
		return hb.Put(boltkv.U64(ch.Version), cv)
	})
	if err != nil {
		return nil, Change{}, fmt.Errorf("crosswalk %s: %w", sp.Name, err)
	}
	old := s.Snapshot()
	ns := &Set{tables: make(map[string]*Table, len(old.tables)+1)}
	for k, v := range old.tables {
		ns.tables[k] = v
	}
	ns.tables[sp.Name] = t
	s.set.Store(ns)
	return t, ch, nil
}

// History returns a table's changes, newest first.
func (s *Store) History(name string, limit int) ([]Change, error) {
	if _, err := s.Spec(name); err != nil {
		return nil, err
	}
	var out []Change
	err := s.db.View(func(tx *bolt.Tx) error {
		hb := tx.Bucket(bucketHistory).Bucket([]byte(name))
		if hb == nil {
			return nil
		}
		c := hb.Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var ch Change
			if err := json.Unmarshal(v, &ch); err != nil {
				return fmt.Errorf("%w: history of %s: %v", ErrCorrupt, name, err)
			}
			out = append(out, ch)
		}
		return nil
	})
	return out, err
}

func diff(sp Spec, before, after []Row) Change {
	var ch Change
	old := make(map[string]Row, len(before))
	for _, r := range before {
		old[sp.upsertKey(r)] = r
	}
	seen := make(map[string]bool, len(after))
	for _, r := range after {
		k := sp.upsertKey(r)
		seen[k] = true
		o, ok := old[k]
		switch {
		case !ok:
			ch.Added = append(ch.Added, r)
		case !equalRow(o, r):
			ch.Updated = append(ch.Updated, RowUpdate{Before: o, After: r})
		}
	}
	for _, r := range before {
		if !seen[sp.upsertKey(r)] {
			ch.Removed = append(ch.Removed, r)
		}
	}
	return ch
}

func equalRow(a, b Row) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func cloneRows(rows []Row) []Row {
	out := make([]Row, len(rows))
	for i, r := range rows {
		c := make(Row, len(r))
		for k, v := range r {
			if v != "" {
				c[k] = v
			}
		}
		out[i] = c
	}
	return out
}
