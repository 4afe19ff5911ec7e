package subkey

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// RFC 5869, appendix A.1 (test case 1, SHA-256): pins the HKDF we build on.
func TestHKDFKnownAnswer(t *testing.T) {
	ikm := unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")
	salt := unhex("000102030405060708090a0b0c")
	info := string(unhex("f0f1f2f3f4f5f6f7f8f9"))
	okm, err := hkdf.Key(sha256.New, ikm, salt, info, 42)
	if err != nil {
		t.Fatal(err)
	}
	want := "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
	if got := hex.EncodeToString(okm); got != want {
		t.Fatalf("OKM = %s, want %s", got, want)
	}
}

// The expected message was computed with an independent implementation
// (Python cryptography: HKDF-SHA256 then AESGCM) from the same inputs.
func TestOpenKnownAnswer(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	msg := unhex("404142434445464748494a4b4c4d4e4f606162636465666768696a6b" +
		"40b5970c597ca613ffda960ff920e2764948b4b2fea2caf188d3cddd3ca294f36fa1c02cef1b214b8910")
	a, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := a.Open(nil, msg, []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != "custos subkey known answer" {
		t.Fatalf("plaintext = %q", pt)
	}
	// Every single-bit change, and the wrong associated data, is refused.
	for i := range msg {
		bad := bytes.Clone(msg)
		bad[i] ^= 1
		if _, err := a.Open(nil, bad, []byte("ad")); !errors.Is(err, ErrOpen) {
			t.Fatalf("bit flip at %d: err = %v", i, err)
		}
	}
	if _, err := a.Open(nil, msg, []byte("ae")); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong ad: err = %v", err)
	}
	if _, err := a.Open(nil, msg[:Overhead-1], nil); !errors.Is(err, ErrOpen) {
		t.Fatalf("truncated: err = %v", err)
	}
}

func TestSealOpenAndEpochs(t *testing.T) {
	a, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New(bytes.Repeat([]byte{7}, 32)) // another process with the same key
	m1, err := a.Seal([]byte("prefix"), []byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(m1, []byte("prefix")) || len(m1) != 6+5+Overhead {
		t.Fatalf("Seal appended %d bytes", len(m1)-6)
	}
	// Use up the subkey: the next message has a new salt.
	a.cur.Load().used.Store(MaxPerSubkey)
	m2, err := a.Seal(nil, []byte("world"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(m1[6:6+SaltSize], m2[:SaltSize]) {
		t.Fatal("salt did not change after MaxPerSubkey messages")
	}
	for _, tc := range []struct{ msg, want []byte }{{m1[6:], []byte("hello")}, {m2, []byte("world")}} {
		for _, x := range []*AEAD{a, b} {
			got, err := x.Open(nil, tc.msg, nil)
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("Open = %q, %v", got, err)
			}
		}
	}
	a.Zero()
	if _, err := a.Seal(nil, nil, nil); !errors.Is(err, ErrZeroed) {
		t.Fatalf("Seal after Zero: %v", err)
	}
	if _, err := a.Open(nil, m1[6:], nil); !errors.Is(err, ErrZeroed) {
		t.Fatalf("Open after Zero: %v", err)
	}
}

func TestConcurrentSealNeverExceedsLimit(t *testing.T) {
	a, _ := New(make([]byte, 32))
	if _, err := a.Seal(nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	first := a.cur.Load()
	first.used.Store(MaxPerSubkey - 10)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if _, err := a.Seal(nil, []byte("x"), nil); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if a.cur.Load() == first {
		t.Fatal("no new epoch")
	}
	if n := a.cur.Load().used.Load(); n != 150 {
		t.Fatalf("new epoch used %d times, want 150", n)
	}
}

func TestNewRejectsShortKey(t *testing.T) {
	if _, err := New(make([]byte, 16)); err == nil {
		t.Fatal("16-byte key accepted")
	}
}
