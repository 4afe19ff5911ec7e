package ca

import (
	"encoding/pem"
	"errors"
	"testing"
)

// FuzzSignCSR feeds arbitrary bytes to Sign as a CSR: no panics, and a
// request that is refused issues nothing. Only a CSR that parses and whose
// signature verifies may be signed.
func FuzzSignCSR(f *testing.F) {
	c, _ := newTestCA(f)
	key := p256(f)
	good := csrFor(f, key, "a.example.com", []string{"b.example.com"}, nil, "spiffe://example.org/ns/a/sa/b")
	block, _ := pem.Decode(good)
	f.Add(good)
	f.Add(block.Bytes)
	f.Add(csrFor(f, key, "evil.com", nil, nil))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIBIjAN\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{0x30, 0x82, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		before := countCerts(t, c)
		got, err := c.Sign(bg, "web", data, SignOptions{})
		after := countCerts(t, c)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Sign failed with an error that is not ErrInvalid: %v", err)
			}
			if got != nil || after != before {
				t.Fatalf("refused (%v) but issued: %v, inventory %d -> %d", err, got, before, after)
			}
			return
		}
		if _, perr := parseCSR(data); perr != nil {
			t.Fatalf("signed a CSR that does not parse: %v", perr)
		}
		if after != before+1 {
			t.Fatalf("issued but inventory %d -> %d", before, after)
		}
	})
}
