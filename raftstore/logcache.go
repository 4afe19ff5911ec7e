package raftstore

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
)

// Bounds of the in-memory cache of recent log entries.
//
// The cache saves the disk reads of entries just written: the leader
// sends them to the followers, and every node applies them. raft's own
// LogCache bounds the entries it holds by number alone, but one entry
// here is a batch of up to maxBatchCommands commands and maxBatchBytes
// (group commit), so 1,024 entries could hold gigabytes; measured with
// 64 to 128 writers, they held some 45 MB per node. This cache drops its
// oldest entries past logCacheBytes as well: a few full batches, more than
// the MaxAppendEntries that one replication round sends.
const (
	logCacheEntries = 1024
	logCacheBytes   = 16 << 20
)

// logCache is a raft.LogStore that keeps the most recent entries it
// stored in memory, at most maxEntries of them and maxBytes of their data.
// An entry over maxBytes on its own is not kept. Reads of other entries,
// and every other call, go to the store.
type logCache struct {
	store raft.LogStore

	mu       sync.RWMutex
	ring     []*raft.Log // entry i at ring[i % len(ring)]
	bytes    int         // logSize of the entries in ring
	maxBytes int
	low      uint64 // no entry below low is in ring
}

func newLogCache(store raft.LogStore, maxEntries, maxBytes int) (*logCache, error) {
	if maxEntries <= 0 || maxBytes <= 0 {
		return nil, fmt.Errorf("raftstore: log cache bounds %d entries, %d bytes: must be positive", maxEntries, maxBytes)
	}
	return &logCache{store: store, ring: make([]*raft.Log, maxEntries), maxBytes: maxBytes}, nil
}

// logSize is what an entry holds in memory, near enough.
func logSize(l *raft.Log) int { return len(l.Data) + len(l.Extensions) + 64 }

// IsMonotonic tells raft whether the store's indexes only grow, as
// raft.LogCache does.
func (c *logCache) IsMonotonic() bool {
	m, ok := c.store.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (c *logCache) GetLog(index uint64, log *raft.Log) error {
	c.mu.RLock()
	cached := c.ring[index%uint64(len(c.ring))]
	c.mu.RUnlock()
	if cached != nil && cached.Index == index {
		*log = *cached
		return nil
	}
	return c.store.GetLog(index, log)
}

func (c *logCache) StoreLog(log *raft.Log) error { return c.StoreLogs([]*raft.Log{log}) }

func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		return fmt.Errorf("unable to store logs within log store, err: %q", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := uint64(len(c.ring))
	for _, l := range logs {
		slot := &c.ring[l.Index%n]
		if old := *slot; old != nil {
			c.bytes -= logSize(old)
			*slot = nil
		}
		if size := logSize(l); size <= c.maxBytes {
			*slot = l
			c.bytes += size
		}
		if l.Index >= n && c.low < l.Index-n+1 {
			c.low = l.Index - n + 1
		}
		if l.Index < c.low {
			c.low = l.Index
		}
		// Drop the oldest entries until the newest fit.
		for c.bytes > c.maxBytes && c.low < l.Index {
			if old := c.ring[c.low%n]; old != nil && old.Index == c.low {
				c.bytes -= logSize(old)
				c.ring[c.low%n] = nil
			}
			c.low++
		}
	}
	return nil
}

func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

func (c *logCache) LastIndex() (uint64, error) { return c.store.LastIndex() }

func (c *logCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	clear(c.ring)
	c.bytes, c.low = 0, 0
	c.mu.Unlock()
	return c.store.DeleteRange(min, max)
}

// cachedBytes is the data the cache holds, for tests.
func (c *logCache) cachedBytes() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}
