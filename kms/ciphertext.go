package kms

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"math"
	"strconv"
	"unsafe"
)

// Ciphertexts, signatures and HMACs are self-describing: they carry the key
// version that made them, so that decrypt and verify need no version from
// the caller. Each has two equivalent forms:
//
//	binary: 0xC5 || uvarint(version) || body     (what the Go API returns)
//	text:   "custos:v<version>:" || base64(body) (standard alphabet, padded; the
//	                                              wire form, as Vault's "vault:v1:")
//
// Every function that takes one accepts either form. The body depends on the
// key type (see KeyType).
const (
	ctMagic    = 0xC5
	textPrefix = "custos:v"
	maxVersion = math.MaxInt32
)

// appendHeader appends the binary header for version v.
func appendHeader(dst []byte, v int) []byte {
	dst = append(dst, ctMagic)
	return binary.AppendUvarint(dst, uint64(v))
}

// ParseCiphertext returns the key version and the body of a ciphertext,
// signature or HMAC in either form. It fails with ErrMalformed.
func ParseCiphertext(ct []byte) (version int, body []byte, err error) {
	if bytes.HasPrefix(ct, []byte(textPrefix)) {
		return parseText(ct[len(textPrefix):])
	}
	if len(ct) < 3 || ct[0] != ctMagic {
		return 0, nil, ErrMalformed
	}
	v, n := binary.Uvarint(ct[1:])
	// Only the shortest encoding is accepted, so each value has one form.
	var shortest [binary.MaxVarintLen64]byte
	if n <= 0 || v < 1 || v > maxVersion || n != binary.PutUvarint(shortest[:], v) {
		return 0, nil, ErrMalformed
	}
	body = ct[1+n:]
	if len(body) == 0 {
		return 0, nil, ErrMalformed
	}
	return int(v), body, nil
}

func parseText(s []byte) (int, []byte, error) {
	colon := bytes.IndexByte(s, ':')
	if colon < 1 || colon > 10 || s[0] == '0' {
		return 0, nil, ErrMalformed
	}
	for _, c := range s[:colon] {
		if c < '0' || c > '9' {
			return 0, nil, ErrMalformed
		}
	}
	v, err := strconv.ParseUint(string(s[:colon]), 10, 32)
	if err != nil || v < 1 || v > maxVersion {
		return 0, nil, ErrMalformed
	}
	enc := s[colon+1:]
	if bytes.ContainsAny(enc, "\r\n") { // base64 would skip them
		return 0, nil, ErrMalformed
	}
	body := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
	n, err := base64.StdEncoding.Strict().Decode(body, enc)
	if err != nil || n == 0 {
		return 0, nil, ErrMalformed
	}
	return int(v), body[:n], nil
}

// FormatCiphertext returns the text form of a ciphertext, signature or HMAC
// given in either form.
func FormatCiphertext(ct []byte) (string, error) {
	v, body, err := ParseCiphertext(ct)
	if err != nil {
		return "", err
	}
	b := make([]byte, 0, len(textPrefix)+11+base64.StdEncoding.EncodedLen(len(body)))
	b = strconv.AppendInt(append(b, textPrefix...), int64(v), 10)
	b = base64.StdEncoding.AppendEncode(append(b, ':'), body)
	return unsafe.String(unsafe.SliceData(b), len(b)), nil // b is not used again: no copy
}
