package raftstore

import (
	"crypto/rand"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Page fill. bbolt splits a page that overflows into pages filled to the
// bucket's FillPercent, half by default: right for keys that arrive in
// random order, which land in every page, but a table written at its end
// (keys that grow with time) is left with every page but the last half
// empty. Such tables, named in Config.OrderedTables, and the store's own
// request tables are filled to orderedFill; the rest keeps bbolt's
// default. The setting changes how pages are split, not what the file
// holds.

// orderedFill leaves a tenth of each page for keys that arrive a little
// out of order (requests stamped by several nodes' clocks, serials made
// on several nodes).
const orderedFill = 0.9

// fillOrdered sets the fill of the ordered tables for the transaction tx,
// which keeps the bucket handles it hands out.
func (f *fsm) fillOrdered(tx *bolt.Tx) {
	for _, name := range f.ordered {
		if b := tx.Bucket(name); b != nil {
			b.FillPercent = orderedFill
		}
	}
	// Keys of the request index open with the log index: strictly
	// increasing.
	if b := tx.Bucket(bucketReqIdx); b != nil {
		b.FillPercent = 1
	}
}

// orderedBuckets returns the buckets of the tables named, with the
// store's table of remembered requests.
func orderedBuckets(tables []string) [][]byte {
	out := [][]byte{bucketReq}
	for _, t := range tables {
		out = append(out, tableBucket(t))
	}
	return out
}

// newRequestID returns a request ID: the time in nanoseconds (8 bytes,
// big-endian) and 8 random bytes. IDs grow with time, so the table of
// remembered requests is written at its end; the random bytes keep the
// IDs of one instant apart.
func newRequestID() []byte {
	id := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(time.Now().UnixNano()))
	id = id[:16]
	_, _ = rand.Read(id[8:])
	return id
}
