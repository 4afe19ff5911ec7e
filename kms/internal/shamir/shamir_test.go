package shamir

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
)

// FIPS 197, section 4.2 and 5.1.1: products and an inverse in the AES field.
func TestFieldKnownAnswers(t *testing.T) {
	if got := mul(0x57, 0x83); got != 0xc1 {
		t.Errorf("{57}*{83} = %#x, want 0xc1", got)
	}
	if got := mul(0x57, 0x13); got != 0xfe {
		t.Errorf("{57}*{13} = %#x, want 0xfe", got)
	}
	if got := inv(0x53); got != 0xca {
		t.Errorf("{53}^-1 = %#x, want 0xca", got)
	}
	if got := inv(0); got != 0 {
		t.Errorf("inv(0) = %#x, want 0", got)
	}
	for a := 1; a < 256; a++ {
		if got := mul(byte(a), inv(byte(a))); got != 1 {
			t.Fatalf("%#x * inv = %#x", a, got)
		}
	}
}

// The expected shares were computed by an independent implementation
// (log/exp tables with generator 3) from the same coefficients.
func TestSplitKnownAnswer(t *testing.T) {
	coeffs := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	shares, err := split([]byte("custos"), 5, 3, bytes.NewReader(coeffs))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"6072707b6c7401",
		"6963615a555502",
		"6a646255565203",
		"473907e8eb9f04",
		"443e04e7e89805",
	}
	for i, sh := range shares {
		if got := hex.EncodeToString(sh); got != want[i] {
			t.Errorf("share %d = %s, want %s", i, got, want[i])
		}
	}
	// Degree-1 polynomial 0x53 + 0xca*x, worked by hand from FIPS 197.
	shares, err = split([]byte{0x53}, 3, 2, bytes.NewReader([]byte{0xca}))
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range []string{"9901", "dc02", "1603"} {
		if got := hex.EncodeToString(shares[i]); got != w {
			t.Errorf("share %d = %s, want %s", i, got, w)
		}
	}
}

func TestCombineKnownAnswer(t *testing.T) {
	shares := []string{"443e04e7e89805", "6963615a555502", "6a646255565203"}
	var in [][]byte
	for _, s := range shares {
		b, _ := hex.DecodeString(s)
		in = append(in, b)
	}
	got, err := Combine(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "custos" {
		t.Fatalf("Combine = %q", got)
	}
}

func TestRoundTripEverySubset(t *testing.T) {
	secret := make([]byte, 32)
	rand.Read(secret)
	shares, err := Split(secret, 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	// Every subset of 3 or more recovers the secret; every subset of 2 does not.
	for mask := 1; mask < 1<<5; mask++ {
		var sub [][]byte
		for i := range 5 {
			if mask&(1<<i) != 0 {
				sub = append(sub, shares[i])
			}
		}
		got, err := Combine(sub)
		if err != nil {
			t.Fatal(err)
		}
		if eq := bytes.Equal(got, secret); eq != (len(sub) >= 3) {
			t.Errorf("subset %05b (%d shares): recovered=%v", mask, len(sub), eq)
		}
	}
}

func TestSingleShare(t *testing.T) {
	shares, err := Split([]byte("k"), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Combine(shares)
	if err != nil || string(got) != "k" {
		t.Fatalf("Combine = %q, %v", got, err)
	}
}

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name             string
		secret           []byte
		parts, threshold int
	}{
		{"empty secret", nil, 5, 3},
		{"zero parts", []byte("s"), 0, 0},
		{"too many parts", []byte("s"), 256, 3},
		{"threshold above parts", []byte("s"), 3, 4},
		{"zero threshold", []byte("s"), 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Split(tc.secret, tc.parts, tc.threshold); !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	for _, tc := range []struct {
		name   string
		shares [][]byte
	}{
		{"none", nil},
		{"short", [][]byte{{1}}},
		{"lengths differ", [][]byte{{1, 2, 1}, {1, 2}}},
		{"zero x", [][]byte{{1, 0}, {2, 1}}},
		{"repeated x", [][]byte{{1, 3}, {2, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Combine(tc.shares); !errors.Is(err, ErrInvalidShares) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

// FuzzShamirCombine feeds arbitrary bytes, cut into shares, to Combine: it
// must never panic, and whatever it returns for well-formed shares must be
// one byte shorter than a share.
func FuzzShamirCombine(f *testing.F) {
	f.Add([]byte("6072707b6c74016963615a555502"), uint8(7))
	f.Add([]byte{1, 2, 3, 4, 5, 6}, uint8(2))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, size uint8) {
		var shares [][]byte
		if size == 0 {
			shares = [][]byte{data}
		} else {
			for len(data) > 0 {
				n := min(int(size), len(data))
				shares = append(shares, data[:n])
				data = data[n:]
			}
		}
		secret, err := Combine(shares)
		if err == nil && len(secret) != len(shares[0])-1 {
			t.Fatalf("secret length %d for shares of length %d", len(secret), len(shares[0]))
		}
	})
}
