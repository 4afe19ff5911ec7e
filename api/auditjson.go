package api

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/custos-pki/custos/audit"
)

// jsonObject decodes body as a JSON object for the audit log; anything else
// is logged as its HMAC under "body". The result is exactly what
// encoding/json makes of the body (FuzzJSONObject holds it to that): the
// common bodies (strings without escapes, numbers, literals, shallow
// nesting) are read in one pass by readObject; anything else goes to
// encoding/json, which would otherwise scan every body twice.
func jsonObject(body []byte) map[string]any {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if m, ok := readObject(body); ok {
		return m
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return map[string]any{"body": string(body)}
	}
	return m
}

// maxQuickDepth is the nesting readObject handles; deeper goes the slow way.
const maxQuickDepth = 16

// quickReader reads the subset of JSON that readObject accepts.
type quickReader struct {
	b     []byte
	i     int
	depth int
}

// readObject reads a JSON object as encoding/json would into a
// map[string]any, or reports false for anything outside its subset (which
// includes all malformed input).
func readObject(b []byte) (map[string]any, bool) {
	r := quickReader{b: b}
	r.space()
	if !r.at('{') {
		return nil, false
	}
	m, ok := r.object()
	if !ok {
		return nil, false
	}
	r.space()
	return m, r.i == len(r.b)
}

func (r *quickReader) at(c byte) bool { return r.i < len(r.b) && r.b[r.i] == c }

func (r *quickReader) space() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

func (r *quickReader) value() (any, bool) {
	r.space()
	if r.i >= len(r.b) {
		return nil, false
	}
	switch c := r.b[r.i]; {
	case c == '{':
		return r.object()
	case c == '[':
		return r.array()
	case c == '"':
		return r.str()
	case c == 't':
		return true, r.literal("true")
	case c == 'f':
		return false, r.literal("false")
	case c == 'n':
		return nil, r.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return r.number()
	}
	return nil, false
}

func (r *quickReader) object() (map[string]any, bool) {
	if r.depth++; r.depth > maxQuickDepth {
		return nil, false
	}
	r.i++ // '{'
	m := map[string]any{}
	r.space()
	if r.at('}') {
		r.i++
		r.depth--
		return m, true
	}
	for {
		r.space()
		if !r.at('"') {
			return nil, false
		}
		k, ok := r.key()
		if !ok {
			return nil, false
		}
		r.space()
		if !r.at(':') {
			return nil, false
		}
		r.i++
		v, ok := r.value()
		if !ok {
			return nil, false
		}
		m[k] = v // a repeated key: the last wins, as in encoding/json
		r.space()
		switch {
		case r.at(','):
			r.i++
		case r.at('}'):
			r.i++
			r.depth--
			return m, true
		default:
			return nil, false
		}
	}
}

func (r *quickReader) array() ([]any, bool) {
	if r.depth++; r.depth > maxQuickDepth {
		return nil, false
	}
	r.i++ // '['
	a := []any{}
	r.space()
	if r.at(']') {
		r.i++
		r.depth--
		return a, true
	}
	for {
		v, ok := r.value()
		if !ok {
			return nil, false
		}
		a = append(a, v)
		r.space()
		switch {
		case r.at(','):
			r.i++
		case r.at(']'):
			r.i++
			r.depth--
			return a, true
		default:
			return nil, false
		}
	}
}

// str reads a string without escapes of valid UTF-8; escapes, control
// characters and invalid UTF-8 (which encoding/json replaces) go the slow
// way.
func (r *quickReader) str() (string, bool) {
	s, ok := r.strBytes()
	if !ok {
		return "", false
	}
	return string(s), true
}

// key is str for an object's key: the names the API's bodies use come
// from knownKeys, without a copy.
func (r *quickReader) key() (string, bool) {
	s, ok := r.strBytes()
	if !ok {
		return "", false
	}
	if k, known := knownKeys[string(s)]; known { // a lookup without a copy
		return k, true
	}
	return string(s), true
}

// knownKeys interns the object keys of the API's common request and
// response bodies, and the audit log's plain fields.
var knownKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range append([]string{
		"data", "metadata", "version", "created_time", "deletion_time", "deleted", "destroyed",
		"custom_metadata", "options", "cas", "plaintext", "ciphertext", "key_version",
		"associated_data", "batch_input", "batch_results", "input", "signature", "hmac", "valid",
		"error", "code", "message", "request_id", "lease_id", "lease_duration", "wrap_info",
		"warnings", "auth", "client_token", "keys", "current_version", "oldest_version",
		"updated_time", "versions", "max_versions", "cas_required", "delete_version_after",
	}, audit.DefaultAllowKeys()...) {
		m[k] = k
	}
	return m
}()

// strBytes reads a string as str does, and returns its bytes in the input.
func (r *quickReader) strBytes() ([]byte, bool) {
	start := r.i + 1
	n := bytes.IndexByte(r.b[start:], '"')
	if n < 0 {
		return nil, false
	}
	s := r.b[start : start+n]
	if bytes.IndexByte(s, '\\') >= 0 || !utf8.Valid(s) {
		return nil, false
	}
	for _, c := range s {
		if c < 0x20 {
			return nil, false
		}
	}
	r.i = start + n + 1
	return s, true
}

func (r *quickReader) literal(word string) bool {
	if !bytes.HasPrefix(r.b[r.i:], []byte(word)) {
		return false
	}
	r.i += len(word)
	return true
}

// number reads a number by the JSON grammar as a float64, as encoding/json
// does for an interface value.
func (r *quickReader) number() (any, bool) {
	start := r.i
	if r.at('-') {
		r.i++
	}
	switch {
	case r.at('0'):
		r.i++
	case r.digits() == 0:
		return nil, false
	}
	if r.at('.') {
		r.i++
		if r.digits() == 0 {
			return nil, false
		}
	}
	if r.at('e') || r.at('E') {
		r.i++
		if r.at('+') || r.at('-') {
			r.i++
		}
		if r.digits() == 0 {
			return nil, false
		}
	}
	f, err := strconv.ParseFloat(string(r.b[start:r.i]), 64)
	if err != nil {
		return nil, false
	}
	return f, true
}

func (r *quickReader) digits() int {
	n := 0
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		r.i++
		n++
	}
	return n
}
