// Package boltkv holds the small key/value encodings every bbolt store of
// agent and hub shares: big-endian uint64 keys (so byte order is numeric
// order) and uint64 counters in meta buckets.
package boltkv

import (
	"encoding/binary"

	bolt "go.etcd.io/bbolt"
)

// U64 encodes v as 8 big-endian bytes: sequences and positions sort in
// numeric order as bbolt keys.
func U64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// ToU64 decodes U64's encoding; anything else reads as 0 (a missing key).
func ToU64(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// GetU64 reads a uint64 stored under key; 0 when absent.
func GetU64(bk *bolt.Bucket, key []byte) uint64 { return ToU64(bk.Get(key)) }

// PutU64 stores v under key.
func PutU64(bk *bolt.Bucket, key []byte, v uint64) error { return bk.Put(key, U64(v)) }

// NextU64 advances the counter under key and returns its new value (1 for
// a bucket that never counted): the next id of a store.
func NextU64(bk *bolt.Bucket, key []byte) (uint64, error) {
	n := GetU64(bk, key) + 1
	return n, PutU64(bk, key, n)
}
