package kms

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseCiphertext(t *testing.T) {
	for _, tc := range []struct {
		in   string
		v    int
		body string
		ok   bool
	}{
		{"custos:v1:aGVsbG8=", 1, "hello", true},
		{"custos:v2147483647:aGk=", 2147483647, "hi", true},
		{"\xc5\x01hello", 1, "hello", true},
		{"\xc5\x80\x01x", 128, "x", true},
		{"custos:v0:aGk=", 0, "", false},          // version 0
		{"custos:v01:aGk=", 0, "", false},         // leading zero
		{"custos:v2147483648:aGk=", 0, "", false}, // above int32
		{"custos:v1:", 0, "", false},              // empty body
		{"custos:v1:aGk", 0, "", false},           // missing padding
		{"custos:v1:aGl=", 0, "", false},          // non-zero padding bits
		{"custos:v1:aG\nk=", 0, "", false},        // newline
		{"custos:v-1:aGk=", 0, "", false},
		{"custos:vx:aGk=", 0, "", false},
		{"custos:v1", 0, "", false},
		{"vault:v1:aGk=", 0, "", false},
		{"\xc5\x00x", 0, "", false},     // version 0
		{"\xc5\x81\x00x", 0, "", false}, // overlong varint
		{"\xc5\x01", 0, "", false},      // no body
		{"\xc4\x01x", 0, "", false},
		{"", 0, "", false},
	} {
		v, body, err := ParseCiphertext([]byte(tc.in))
		if tc.ok != (err == nil) || tc.ok && (v != tc.v || string(body) != tc.body) {
			t.Errorf("ParseCiphertext(%q) = %d, %q, %v", tc.in, v, body, err)
		}
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseCiphertext(%q): %v is not ErrMalformed", tc.in, err)
		}
	}
}

// FuzzParseCiphertext checks that no input makes ParseCiphertext, or the
// operations that parse ciphertexts and signatures, panic; that whatever
// parses survives a round trip through the text form; and that every
// refusal carries a category.
func FuzzParseCiphertext(f *testing.F) {
	n := newNode(f)
	k := n.k
	for _, typ := range []KeyType{TypeAES256GCM96, TypeAES256GCM96HKDF, TypeEd25519, TypeHMAC} {
		if _, err := k.CreateKey(bg, string(typ), KeyOptions{Type: typ}); err != nil {
			f.Fatal(err)
		}
	}
	ct1, _ := k.Encrypt(bg, string(TypeAES256GCM96), []byte("seed"), CryptOptions{})
	ct2, _ := k.Encrypt(bg, string(TypeAES256GCM96HKDF), []byte("seed"), CryptOptions{})
	text, _ := FormatCiphertext(ct2)
	f.Add(ct1)
	f.Add(ct2)
	f.Add([]byte(text))
	f.Add([]byte("custos:v1:AAAA"))
	f.Add([]byte("\xc5\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, body, err := ParseCiphertext(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
		} else {
			text, err := FormatCiphertext(data)
			if err != nil {
				t.Fatalf("FormatCiphertext of a parsed input: %v", err)
			}
			v2, body2, err := ParseCiphertext([]byte(text))
			if err != nil || v2 != v || !bytes.Equal(body, body2) {
				t.Fatalf("text round trip: %d %x %v, want %d %x", v2, body2, err, v, body)
			}
		}
		check := func(err error) {
			if err != nil && Category(err) == nil {
				t.Fatalf("uncategorised error: %v", err)
			}
		}
		for _, name := range []string{string(TypeAES256GCM96), string(TypeAES256GCM96HKDF)} {
			_, err := k.Decrypt(bg, name, data, CryptOptions{})
			check(err)
		}
		_, err = k.Verify(bg, string(TypeEd25519), []byte("m"), data, SignOptions{})
		check(err)
		_, err = k.VerifyHMAC(bg, string(TypeHMAC), []byte("m"), data, SignOptions{})
		check(err)
	})
}
