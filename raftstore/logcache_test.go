package raftstore

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"

	"github.com/hashicorp/raft"
)

// TestLogCacheBoundsBytes: entries past the byte bound leave the cache,
// oldest first, and are still read from the store; recent ones come from
// the cache.
func TestLogCacheBoundsBytes(t *testing.T) {
	store := raft.NewInmemStore()
	const size = 100 << 10
	c, err := newLogCache(store, 1024, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 300; i++ {
		data := bytes.Repeat([]byte{byte(i)}, size)
		if err := c.StoreLogs([]*raft.Log{{Index: i, Term: 1, Data: data}}); err != nil {
			t.Fatal(err)
		}
		if got := c.cachedBytes(); got > 1<<20 {
			t.Fatalf("after entry %d the cache holds %d bytes, over its bound of %d", i, got, 1<<20)
		}
	}
	// The newest entries fit: (1 MiB) / (100 KiB + 64) = 10 of them.
	if got, want := c.cachedBytes(), 10*(size+64); got != want {
		t.Fatalf("cache holds %d bytes, want %d", got, want)
	}
	for i := uint64(1); i <= 300; i++ {
		var l raft.Log
		if err := c.GetLog(i, &l); err != nil || l.Index != i || len(l.Data) != size || l.Data[0] != byte(i) {
			t.Fatalf("entry %d: %v, index %d, %d bytes", i, err, l.Index, len(l.Data))
		}
	}
	// An entry over the bound on its own is stored, not cached.
	big := &raft.Log{Index: 301, Term: 1, Data: make([]byte, 2<<20)}
	if err := c.StoreLogs([]*raft.Log{big}); err != nil {
		t.Fatal(err)
	}
	if got := c.cachedBytes(); got > 1<<20 {
		t.Fatalf("cache holds %d bytes after an oversized entry", got)
	}
	var l raft.Log
	if err := c.GetLog(301, &l); err != nil || len(l.Data) != 2<<20 {
		t.Fatalf("oversized entry: %v, %d bytes", err, len(l.Data))
	}
	if err := c.DeleteRange(1, 301); err != nil {
		t.Fatal(err)
	}
	if got := c.cachedBytes(); got != 0 {
		t.Fatalf("cache holds %d bytes after DeleteRange", got)
	}
	if err := c.GetLog(300, &l); err == nil {
		t.Fatal("a deleted entry is still read")
	}
}

// TestStoreKeepsBoundedLogInMemory: a node that writes large entries does
// not keep the last thousand of them in memory. raft's count-bound
// LogCache kept every one of these 96 entries of 512 KiB (48 MiB); the
// byte-bound cache keeps at most logCacheBytes.
func TestStoreKeepsBoundedLogInMemory(t *testing.T) {
	c := newCluster(t, 1, fastTimeouts)
	s := c.node("node1")
	mustCreateTable(t, s, "kv")
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	value := make([]byte, 512<<10)
	const writes = 96
	for i := range writes {
		_, _ = rand.Read(value[:64])
		if err := s.Put(ctxT(t, settle), "kv", fmt.Appendf(nil, "k%d", i%4), value); err != nil {
			t.Fatal(err)
		}
	}
	after := heap()
	grew := int64(after) - int64(before)
	if limit := int64(logCacheBytes + 16<<20); grew > limit {
		t.Fatalf("after %d writes of %d KiB the heap grew by %d MiB, over %d MiB: the log cache holds them", writes, len(value)>>10, grew>>20, limit>>20)
	}
	t.Logf("heap grew by %.1f MiB after %d writes of %d KiB", float64(grew)/(1<<20), writes, len(value)>>10)
}
