// Package decodecache remembers the JSON decoding of stored records, keyed
// by their exact stored bytes. It saves the decoding of a record read on
// every request and nothing else: the record is still read every time (as
// linearizably as the caller asks), and any change to it changes its
// bytes, so a cache never answers for bytes it did not decode.
package decodecache

import (
	"encoding/json"
	"sync"
)

// Bounds of a Cache: entries, bytes of the records it keys on, and the
// largest record it keeps (a larger one is decoded every time). When full
// a cache starts over.
const (
	MaxEntries = 4096
	MaxBytes   = 8 << 20
	MaxRecord  = 64 << 10
)

// Cache holds decoded records of type T. The zero value is ready.
type Cache[T any] struct {
	mu    sync.Mutex
	m     map[string]*T // never modified once stored
	bytes int
}

// Decode returns the decoding of raw, shared: the caller must not change
// it.
func (c *Cache[T]) Decode(raw []byte) (*T, error) {
	c.mu.Lock()
	v, ok := c.m[string(raw)] // no copy of raw for the lookup
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	v = new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, err
	}
	if len(raw) > MaxRecord {
		return v, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= MaxEntries || c.bytes+len(raw) > MaxBytes {
		c.m, c.bytes = make(map[string]*T, 64), 0
	}
	if _, dup := c.m[string(raw)]; !dup {
		c.m[string(raw)] = v
		c.bytes += len(raw)
	}
	return v, nil
}
