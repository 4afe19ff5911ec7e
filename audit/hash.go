package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// HashPrefix starts every hashed value.
const HashPrefix = "hmac-sha256:"

// MinKeySize is the shortest audit HMAC key accepted.
const MinKeySize = 32

// DefaultAllowKeys returns the request and response fields that are never
// secret and are logged as they are. Everything else is hashed.
func DefaultAllowKeys() []string {
	return []string{
		"accessor", "algorithm", "alt_names", "common_name", "display_name",
		"exportable", "format", "increment", "ip_sans", "key_bits", "key_type",
		"max_ttl", "min_decryption_version", "name", "num_uses", "policies",
		"purpose", "renewable", "role", "serial_number", "ttl", "type",
		"uri_sans", "version",
	}
}

// Hasher replaces values with their HMAC under the cluster's audit key, so
// that an operator who knows a value can tell whether it appeared in the
// log (compute Hasher.HMAC of it and search), while the log reveals
// nothing about values nobody knows.
type Hasher struct {
	key   []byte
	allow map[string]bool
	macs  sync.Pool // of *mac, reset before use
}

// mac is an HMAC-SHA256 under the key and a buffer to feed it strings
// through without allocating.
type mac struct {
	h   hash.Hash
	buf []byte
	out [sha256.Size]byte // Sum's destination: a local array would escape through the interface
}

// maxMACBuffer bounds the buffer a pooled mac keeps.
const maxMACBuffer = 64 << 10

// sum returns the HMAC of v.
func (h *Hasher) sum(v string) [sha256.Size]byte {
	// A reset HMAC starts from its saved keyed state: the key is not
	// hashed again for every value.
	m := h.macs.Get().(*mac)
	m.h.Reset()
	m.buf = append(m.buf[:0], v...)
	m.h.Write(m.buf)
	m.h.Sum(m.out[:0])
	out := m.out
	if cap(m.buf) > maxMACBuffer {
		m.buf = nil
	}
	h.macs.Put(m)
	return out
}

// NewHasher returns a Hasher with key (at least MinKeySize bytes) that
// leaves the fields named in allow in plain text.
func NewHasher(key []byte, allow []string) (*Hasher, error) {
	if len(key) < MinKeySize {
		return nil, fmt.Errorf("audit: HMAC key is %d bytes, want at least %d", len(key), MinKeySize)
	}
	h := &Hasher{key: bytes.Clone(key), allow: make(map[string]bool, len(allow))}
	h.macs.New = func() any { return &mac{h: hmac.New(sha256.New, h.key)} }
	for _, k := range allow {
		h.allow[k] = true
	}
	return h, nil
}

// HMAC returns "hmac-sha256:" and the hex HMAC-SHA256 of v.
func (h *Hasher) HMAC(v string) string {
	sum := h.sum(v)
	out := make([]byte, len(HashPrefix)+hex.EncodedLen(len(sum)))
	copy(out, HashPrefix)
	hex.Encode(out[len(HashPrefix):], sum[:])
	return string(out)
}

// Object returns a copy of obj in which every value is hashed except those
// of allowed fields. It is deny by default:
//   - an allowed field keeps a string, number, boolean or null value, and
//     an object or array under it is treated by the same rule;
//   - under a field that is not allowed, every string, number and boolean,
//     however deep, is hashed (numbers and booleans over their JSON text).
//
// Field names are kept. Values that are not JSON types (structs, typed
// slices) are first converted through encoding/json.
func (h *Hasher) Object(obj map[string]any) map[string]any {
	if obj == nil {
		return nil
	}
	out := make(map[string]any, len(obj))
	for k, v := range obj {
		if h.allow[k] {
			out[k] = h.walk(v)
		} else {
			out[k] = h.hashAll(v)
		}
	}
	return out
}

// JSON is Object for a raw JSON object.
func (h *Hasher) JSON(raw []byte) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, errors.New("audit: hash JSON: not a JSON object")
	}
	if dec.More() {
		return nil, errors.New("audit: hash JSON: trailing data")
	}
	return json.Marshal(h.Object(obj))
}

// walk keeps scalars and applies the field rule inside containers.
func (h *Hasher) walk(v any) any {
	switch v := normalize(v).(type) {
	case map[string]any:
		return h.Object(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = h.walk(e)
		}
		return out
	case nil, string, bool, float64, json.Number:
		return v
	}
	return nil // unreachable: normalize returns only JSON types
}

// hashAll hashes every scalar in v.
func (h *Hasher) hashAll(v any) any {
	switch v := normalize(v).(type) {
	case nil:
		return nil
	case string:
		return h.HMAC(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = h.hashAll(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = h.hashAll(e)
		}
		return out
	}
	b, err := json.Marshal(v) // json.Number, float64, bool
	if err != nil {
		return h.HMAC(fmt.Sprintf("%v", v))
	}
	return h.HMAC(string(b))
}

// normalize turns v into the types encoding/json decodes to, so that the
// walk sees every value.
func normalize(v any) any {
	switch v.(type) {
	case nil, string, bool, float64, json.Number, map[string]any, []any:
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("unencodable %T", v)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		return fmt.Sprintf("unencodable %T", v)
	}
	return out
}
