package secrets

import "sync"

// Bounds of a decodeCache: entries, bytes of the records it keys on, and
// the largest record it keeps (a larger one is decoded every time).
const (
	maxDecoded       = 4096
	maxDecodedBytes  = 8 << 20
	maxDecodedRecord = 64 << 10
)

// decodeCache remembers the decoding of stored records (mounts, secret
// metadata), keyed by their exact stored plaintext. It saves the JSON
// decoding of every read and nothing else: the record is still read
// (linearizably when the call asks for it) every time, and any change to
// it changes its bytes, so the cache never answers for bytes it did not
// decode. It lives as long as its Store, which an unseal makes anew. When
// full it starts over. The zero value is ready.
type decodeCache[T any] struct {
	mu    sync.Mutex
	m     map[string]*T // never modified once stored
	bytes int
}

// decode returns the decoding of raw, shared: the caller must not change
// it.
func (c *decodeCache[T]) decode(raw []byte) (*T, error) {
	c.mu.Lock()
	v, ok := c.m[string(raw)] // no copy of raw for the lookup
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	v = new(T)
	if err := jsonUnmarshal(raw, v); err != nil {
		return nil, err
	}
	if len(raw) > maxDecodedRecord {
		return v, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxDecoded || c.bytes+len(raw) > maxDecodedBytes {
		c.m, c.bytes = make(map[string]*T, 64), 0
	}
	if _, dup := c.m[string(raw)]; !dup {
		c.m[string(raw)] = v
		c.bytes += len(raw)
	}
	return v, nil
}
