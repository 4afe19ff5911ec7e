package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Reads decode the mount and metadata records through caches keyed by
// their bytes: a change written through another Store (as through another
// node, with nothing to tell this one) is seen by the next read here.
func TestReadsSeeChangedRecords(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "kv", MountOptions{})
	cfg := DefaultConfig()
	cfg.Storage, cfg.Keys, cfg.Clock = e.b, e.k, e.clock
	other, err := New(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, "kv", "a", `{"k":"1"}`)
	get := func() (*Secret, error) { return e.s.Get(bg, "kv", "a", 0) }
	for range 2 { // the second read answers from the caches
		if s, err := get(); err != nil || string(s.Data) != `{"k":"1"}` || s.Version != 1 {
			t.Fatalf("first read: %+v, %v", s, err)
		}
	}
	if _, err := other.Put(bg, "kv", "a", []byte(`{"k":"2"}`), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if s, err := get(); err != nil || string(s.Data) != `{"k":"2"}` || s.Version != 2 {
		t.Fatalf("after a new version: %+v, %v", s, err)
	}
	if _, err := other.PutMetadata(bg, "kv", "a", MetadataUpdate{CustomMetadata: map[string]string{"owner": "ops"}}); err != nil {
		t.Fatal(err)
	}
	if s, err := get(); err != nil || s.CustomMetadata["owner"] != "ops" {
		t.Fatalf("after new custom metadata: %+v, %v", s, err)
	}
	if err := other.Delete(bg, "kv", "a", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := get(); !errors.Is(err, ErrVersionDeleted) {
		t.Fatalf("after deleting the version: %v, want ErrVersionDeleted", err)
	}
	if err := other.Undelete(bg, "kv", "a", 2); err != nil {
		t.Fatal(err)
	}
	if s, err := get(); err != nil || s.Version != 2 {
		t.Fatalf("after undeleting the version: %+v, %v", s, err)
	}
	if _, err := other.UpdateMount(bg, "kv", MountUpdate{CASRequired: new(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Put(bg, "kv", "a", []byte(`{"k":"3"}`), WriteOptions{}); !errors.Is(err, ErrCASRequired) {
		t.Fatalf("write after the mount came to require cas: %v, want ErrCASRequired", err)
	}
}

// The caches are bounded in entries and in bytes, and do not keep large
// records; what they answer is the decoding of the very bytes asked.
func TestDecodeCacheBounded(t *testing.T) {
	var c decodeCache[mountRec]
	for i := range maxDecoded + 10 {
		raw := fmt.Appendf(nil, `{"name":"m%d"}`, i)
		m, err := c.decode(raw)
		if err != nil || m.Name != fmt.Sprintf("m%d", i) {
			t.Fatalf("decode %s: %+v, %v", raw, m, err)
		}
		if len(c.m) > maxDecoded {
			t.Fatalf("%d entries, more than %d", len(c.m), maxDecoded)
		}
	}
	big := []byte(`{"name":"` + strings.Repeat("x", maxDecodedRecord) + `"}`)
	if _, err := c.decode(big); err != nil {
		t.Fatal(err)
	}
	if _, kept := c.m[string(big)]; kept {
		t.Error("a record above maxDecodedRecord was kept")
	}
	mid := bytes.Repeat([]byte("y"), maxDecodedRecord-100)
	for i := range 2 * maxDecodedBytes / len(mid) {
		raw := fmt.Appendf(nil, `{"name":"%d%s"}`, i, mid)
		if _, err := c.decode(raw); err != nil {
			t.Fatal(err)
		}
		if c.bytes > maxDecodedBytes {
			t.Fatalf("%d bytes, more than %d", c.bytes, maxDecodedBytes)
		}
	}
	if _, err := c.decode([]byte(`{"name":`)); err == nil {
		t.Error("a record that does not decode was accepted")
	}
}

func TestDataKeyAsFmt(t *testing.T) {
	for _, v := range []int{-12, -1, 0, 1, 9, 10, 123456789, 1234567890, 12345678901, 1<<63 - 1} {
		if got, want := string(dataKey("m1", "s2", v)), fmt.Sprintf("%s/%s/%010d", "m1", "s2", v); got != want {
			t.Errorf("dataKey(%d) = %q, want %q", v, got, want)
		}
	}
}
