package api

import (
	"bytes"
	"slices"
	"strconv"
	"time"
)

// The fast ways through the JSON of the hottest routes: a request body of
// the one common form and an answer of the one common shape are read and
// written directly, byte for byte as encoding/json would (FuzzQuickDecode
// and FuzzQuickEncode hold them to that); everything else goes through
// encoding/json as before.

// quickDecoder is a request body with a fast decoder for its common form.
// decodeQuick is called on a zero value and reports false, changing
// nothing, for any other form.
type quickDecoder interface{ decodeQuick(body []byte) bool }

// quickEncoder is an answer with a fast encoder for its common shape: it
// appends the JSON encoding/json's Encoder writes (with the newline), or
// reports false.
type quickEncoder interface {
	appendJSON(b []byte) ([]byte, bool)
}

// decodeQuick reads {"plaintext":"..."}.
func (q *KMSEncryptRequest) decodeQuick(body []byte) bool {
	s, ok := quickStringField(body, "plaintext")
	if ok {
		q.Plaintext = s
	}
	return ok
}

// decodeQuick reads {"ciphertext":"..."}.
func (q *KMSDecryptRequest) decodeQuick(body []byte) bool {
	s, ok := quickStringField(body, "ciphertext")
	if ok {
		q.Ciphertext = s
	}
	return ok
}

// quickStringField reads body as a JSON object of exactly one field, name,
// whose value is a string of plain characters (printable ASCII but for '"'
// and '\'), which encoding/json decodes to the same bytes. Any other body
// reports false.
func quickStringField(body []byte, name string) (string, bool) {
	b := trimJSONSpace(body)
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return "", false
	}
	b = trimJSONSpace(b[1 : len(b)-1])
	if len(b) < len(name)+2 || b[0] != '"' || string(b[1:1+len(name)]) != name || b[1+len(name)] != '"' {
		return "", false
	}
	b = trimJSONSpace(b[len(name)+2:])
	if len(b) == 0 || b[0] != ':' {
		return "", false
	}
	b = trimJSONSpace(b[1:])
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	v := b[1 : len(b)-1]
	for _, c := range v {
		if !plainJSON[c] {
			return "", false
		}
	}
	return string(v), true
}

// plainJSONChar reports whether c stands for itself in a JSON string both
// ways: encoding/json neither escapes it (it escapes <, > and &) nor needs
// it escaped.
func plainJSONChar(c byte) bool { return plainJSON[c] }

// plainJSON is plainJSONChar's table; never written after initialisation.
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

func trimJSONSpace(b []byte) []byte {
	return bytes.Trim(b, " \t\r\n")
}

// appendJSON writes a result without an error whose strings are plain;
// given nil, it allocates what the result needs.
func (r KMSResult) appendJSON(b []byte) ([]byte, bool) {
	if r.Error != nil {
		return nil, false
	}
	if b == nil {
		n := len(r.Ciphertext) + len(r.Signature) + len(r.HMAC) + 96
		if r.Plaintext != nil {
			n += len(*r.Plaintext)
		}
		b = make([]byte, 0, n)
	}
	b = append(b, '{')
	start := len(b)
	str := func(name, v string) bool {
		if v == "" {
			return true
		}
		if !plainJSONString(v) {
			return false
		}
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, '"', ':', '"')
		b = append(b, v...)
		b = append(b, '"')
		return true
	}
	if !str("ciphertext", r.Ciphertext) {
		return nil, false
	}
	if r.Plaintext != nil {
		if *r.Plaintext == "" {
			b = append(b, `,"plaintext":""`...)
		} else if !str("plaintext", *r.Plaintext) {
			return nil, false
		}
	}
	if !str("signature", r.Signature) || !str("hmac", r.HMAC) {
		return nil, false
	}
	if r.Valid != nil {
		b = strconv.AppendBool(append(b, `,"valid":`...), *r.Valid)
	}
	if r.KeyVersion != 0 {
		b = strconv.AppendInt(append(b, `,"key_version":`...), int64(r.KeyVersion), 10)
	}
	if len(b) > start {
		b = append(b[:start], b[start+1:]...) // the first field's comma
	}
	return append(b, '}', '\n'), true
}

// appendJSON writes a secret whose data needs no compacting or escaping
// (no whitespace, no '<', '>', '&' and no byte that starts U+2028 or
// U+2029, which encoding/json's Encoder would rewrite) and whose metadata
// is plain. The data is written as stored: secrets.Store returns only
// data it checked as a JSON object when it was written.
func (r SecretReadResponse) appendJSON(b []byte) ([]byte, bool) {
	if len(r.Data) == 0 {
		return nil, false
	}
	for _, c := range r.Data {
		switch c {
		case ' ', '\t', '\r', '\n', '<', '>', '&', 0xe2:
			return nil, false
		}
	}
	m := r.Metadata
	_, off := m.CreatedTime.Zone() // time.Time's MarshalJSON refuses what RFC 3339 cannot say
	if y := m.CreatedTime.Year(); y < 0 || y > 9999 || off <= -24*3600 || off >= 24*3600 || !plainJSONString(m.DeletionTime) {
		return nil, false
	}
	if b == nil {
		b = make([]byte, 0, len(r.Data)+192+64*len(m.CustomMetadata))
	}
	b = append(append(b, `{"data":`...), r.Data...)
	b = strconv.AppendInt(append(b, `,"metadata":{"version":`...), int64(m.Version), 10)
	b = m.CreatedTime.AppendFormat(append(b, `,"created_time":"`...), time.RFC3339Nano)
	b = append(append(append(b, `","deletion_time":"`...), m.DeletionTime...), `","deleted":`...)
	b = strconv.AppendBool(b, m.Deleted)
	b = strconv.AppendBool(append(b, `,"destroyed":`...), m.Destroyed)
	b = append(b, `,"custom_metadata":`...)
	if m.CustomMetadata == nil {
		b = append(b, "null"...)
	} else {
		keys := make([]string, 0, len(m.CustomMetadata))
		for k, v := range m.CustomMetadata {
			if !plainJSONString(k) || !plainJSONString(v) {
				return nil, false
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(append(append(b, '"'), k...), `":"`...)
			b = append(append(b, m.CustomMetadata[k]...), '"')
		}
		b = append(b, '}')
	}
	return append(b, "}}\n"...), true
}

func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainJSONChar(s[i]) {
			return false
		}
	}
	return true
}
