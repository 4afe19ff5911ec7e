package decodecache

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

type rec struct {
	Name string `json:"name"`
}

// A cache is bounded in entries and in bytes, and does not keep large
// records; what it answers is the decoding of the very bytes asked.
func TestBounded(t *testing.T) {
	var c Cache[rec]
	for i := range MaxEntries + 10 {
		raw := fmt.Appendf(nil, `{"name":"m%d"}`, i)
		m, err := c.Decode(raw)
		if err != nil || m.Name != fmt.Sprintf("m%d", i) {
			t.Fatalf("decode %s: %+v, %v", raw, m, err)
		}
		if len(c.m) > MaxEntries {
			t.Fatalf("%d entries, more than %d", len(c.m), MaxEntries)
		}
	}
	big := []byte(`{"name":"` + strings.Repeat("x", MaxRecord) + `"}`)
	if _, err := c.Decode(big); err != nil {
		t.Fatal(err)
	}
	if _, kept := c.m[string(big)]; kept {
		t.Error("a record above MaxRecord was kept")
	}
	mid := bytes.Repeat([]byte("y"), MaxRecord-100)
	for i := range 2 * MaxBytes / len(mid) {
		raw := fmt.Appendf(nil, `{"name":"%d%s"}`, i, mid)
		if _, err := c.Decode(raw); err != nil {
			t.Fatal(err)
		}
		if c.bytes > MaxBytes {
			t.Fatalf("%d bytes, more than %d", c.bytes, MaxBytes)
		}
	}
	if _, err := c.Decode([]byte(`{"name":`)); err == nil {
		t.Error("a record that does not decode was accepted")
	}
}
