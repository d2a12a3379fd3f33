package mqtt

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/google/uuid"

	"github.com/plantsync/plantsync/agent/buffer"
)

// The content-hash id rule, for messages that carry no id of their own: a
// message's hash (topic and payload) is looked up in a window of the most
// recent hashes. A miss gets a new time-ordered event id; the hash and the
// id are committed in the same buffer transaction as the event, so after a
// crash a redelivery of a committed message finds its hash and gets the same
// id (and is acknowledged without a second event), while a message whose
// event was not committed is new. The price: two byte-identical messages
// on one topic inside the window are one event.

const windowKeyPrefix = "w"

type contentHash [16]byte

func hashMessage(topic string, payload []byte) contentHash {
	h := sha256.New()
	h.Write([]byte(topic))
	h.Write([]byte{0})
	h.Write(payload)
	var out contentHash
	copy(out[:], h.Sum(nil))
	return out
}

// windowEntry is one remembered message.
type windowEntry struct {
	hash      contentHash
	id        uuid.UUID
	counter   uint64
	committed bool
	failed    bool
	// waiters are duplicates received before the original was committed:
	// they are acknowledged once it is (or not, if it fails).
	waiters []func(committed bool)
}

// recentIDs is the bounded window. Safe for concurrent use.
type recentIDs struct {
	mu     sync.Mutex
	source string
	slots  []*windowEntry
	byHash map[contentHash]*windowEntry
	next   uint64
}

func newRecentIDs(source string, size int) *recentIDs {
	return &recentIDs{source: source, slots: make([]*windowEntry, size), byHash: make(map[contentHash]*windowEntry, size)}
}

// load restores one committed entry (key "w"+slot).
func (w *recentIDs) load(key, value []byte) error {
	if len(key) != 5 || key[0] != windowKeyPrefix[0] {
		return nil
	}
	if len(value) != 40 {
		return fmt.Errorf("recent-ids entry %x: %d bytes, want 40", key, len(value))
	}
	e := &windowEntry{committed: true}
	copy(e.hash[:], value[:16])
	copy(e.id[:], value[16:32])
	e.counter = binary.BigEndian.Uint64(value[32:])
	slot := int(e.counter % uint64(len(w.slots)))
	if old := w.slots[slot]; old != nil && old.counter > e.counter {
		return nil // window shrank: keep the newer entry
	} else if old != nil {
		delete(w.byHash, old.hash)
	}
	w.slots[slot] = e
	w.byHash[e.hash] = e
	w.next = max(w.next, e.counter+1)
	return nil
}

// claim looks h up. A hit returns the entry (a duplicate); a miss adds a
// new entry and returns the state write that must be committed with its
// event.
func (w *recentIDs) claim(h contentHash) (e *windowEntry, hit bool, write buffer.StateWrite, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e := w.byHash[h]; e != nil && !e.failed {
		return e, true, buffer.StateWrite{}, nil
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, false, buffer.StateWrite{}, fmt.Errorf("new event id: %w", err)
	}
	e = &windowEntry{hash: h, id: id, counter: w.next}
	w.next++
	slot := int(e.counter % uint64(len(w.slots)))
	if old := w.slots[slot]; old != nil && w.byHash[old.hash] == old {
		delete(w.byHash, old.hash)
	}
	w.slots[slot] = e
	w.byHash[h] = e
	key := make([]byte, 5)
	key[0] = windowKeyPrefix[0]
	binary.BigEndian.PutUint32(key[1:], uint32(slot))
	val := make([]byte, 40)
	copy(val, h[:])
	copy(val[16:], id[:])
	binary.BigEndian.PutUint64(val[32:], e.counter)
	return e, false, buffer.StateWrite{Source: w.source, Key: key, Value: val}, nil
}

// wait registers fn to run once e's fate is known; it runs at once if it is.
func (w *recentIDs) wait(e *windowEntry, fn func(committed bool)) {
	w.mu.Lock()
	if !e.committed && !e.failed {
		e.waiters = append(e.waiters, fn)
		w.mu.Unlock()
		return
	}
	ok := e.committed
	w.mu.Unlock()
	fn(ok)
}

// settle records whether e's event was committed.
func (w *recentIDs) settle(e *windowEntry, committed bool) {
	w.mu.Lock()
	if committed {
		e.committed = true
	} else {
		e.failed = true
		if w.byHash[e.hash] == e {
			delete(w.byHash, e.hash)
		}
	}
	waiters := e.waiters
	e.waiters = nil
	w.mu.Unlock()
	for _, fn := range waiters {
		fn(committed)
	}
}
