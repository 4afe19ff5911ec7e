package auth

import (
	"fmt"
	"maps"
	"slices"

	"github.com/custos-pki/custos/internal/decodecache"
)

// decodeCache remembers the decoding of token records, keyed by the exact
// bytes stored (internal/decodecache). It saves the JSON decoding of a
// token on every request and nothing else: the record is still read
// (linearizably) every time, and a change to it (a use, a renewal, a
// revocation) changes its bytes. The zero value is ready.
type decodeCache struct {
	c decodecache.Cache[record]
}

// decode returns the record encoded by raw, a fresh copy the caller may
// change.
func (c *decodeCache) decode(raw []byte) (*record, error) {
	r, err := c.c.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("corrupt record: %w", err)
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
