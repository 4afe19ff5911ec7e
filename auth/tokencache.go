package auth

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// maxDecodedTokens bounds the decode cache; when full it starts over.
const maxDecodedTokens = 4096

// decodeCache remembers the decoding of token records, keyed by the exact
// bytes stored. It saves the JSON decoding of a token on every request and
// nothing else: the record is still read (linearizably) every time, and a
// change to it (a use, a renewal, a revocation) changes its bytes, so the
// cache never answers for bytes it did not decode. The zero value is ready.
type decodeCache struct {
	mu sync.Mutex
	m  map[string]*record // never modified once stored
}

// decode returns the record encoded by raw, a fresh copy the caller may
// change.
func (c *decodeCache) decode(raw []byte) (*record, error) {
	c.mu.Lock()
	r, ok := c.m[string(raw)]
	c.mu.Unlock()
	if !ok {
		r = new(record)
		if err := json.Unmarshal(raw, r); err != nil {
			return nil, fmt.Errorf("corrupt record: %w", err)
		}
		c.mu.Lock()
		if len(c.m) >= maxDecodedTokens || c.m == nil {
			c.m = make(map[string]*record, 64)
		}
		c.m[string(raw)] = r
		c.mu.Unlock()
	}
	return r.clone(), nil
}

// clone copies r deeply enough that changing the copy leaves r as it is.
func (r *record) clone() *record {
	c := *r
	c.Policies = slices.Clone(r.Policies)
	c.Meta = maps.Clone(r.Meta)
	return &c
}
