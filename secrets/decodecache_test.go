package secrets

import (
	"errors"
	"fmt"
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

func TestDataKeyAsFmt(t *testing.T) {
	for _, v := range []int{-12, -1, 0, 1, 9, 10, 123456789, 1234567890, 12345678901, 1<<63 - 1} {
		if got, want := string(dataKey("m1", "s2", v)), fmt.Sprintf("%s/%s/%010d", "m1", "s2", v); got != want {
			t.Errorf("dataKey(%d) = %q, want %q", v, got, want)
		}
	}
}
