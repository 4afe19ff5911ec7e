package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzVaultScalars feeds the lenient decoders of Vault request bodies: they
// must never panic, and what they accept must be in range.
func FuzzVaultScalars(f *testing.F) {
	for _, s := range []string{`1`, `"1"`, `"1h"`, `3600`, `"30d"`, `true`, `"false"`, `1.0`, `1.5`, `"-1"`, `null`, `""`, `"a,b"`, `["a"]`, `{}`, `1e400`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var req struct {
			I vInt      `json:"i"`
			B vBool     `json:"b"`
			D vDuration `json:"d"`
			L vStrings  `json:"l"`
		}
		for _, field := range []string{"i", "b", "d", "l"} {
			if err := json.Unmarshal([]byte(`{"`+field+`":`+s+`}`), &req); err == nil && req.D < 0 {
				t.Fatalf("negative duration from %q", s)
			}
		}
		if d, err := parseVaultDuration(s); err == nil && (d < 0 || d > 1<<33*time.Second) && !strings.ContainsAny(s, "hmsµun") {
			t.Fatalf("duration %v from %q", d, s)
		}
	})
}

// FuzzVaultSignature feeds the JWS signature decoder.
func FuzzVaultSignature(f *testing.F) {
	for _, s := range []string{"vault:v1:AAAA", "vault:v1:", "custos:v2:abc_-", "x", "vault:v1:" + strings.Repeat("A", 86)} {
		f.Add(s, 32)
	}
	f.Fuzz(func(t *testing.T, s string, size int) {
		size = []int{0, 32, 48}[uint(size)%3]
		native, err := jwsToNative(s, size)
		if err != nil {
			return
		}
		if back := nativeToJWS(native, size); size > 0 && back == native {
			t.Fatalf("%q: a JWS signature that does not re-encode", s)
		}
	})
}
