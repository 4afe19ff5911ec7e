package raftstore

import (
	"context"
	"testing"
)

// The linearizable reads of one read session on a follower share one
// read-index request; a write of the session, and a read on another store,
// each take a read index of their own. Without a session every read takes
// its own.
func TestReadSessionSharesOneReadIndex(t *testing.T) {
	c := newCluster(t, 3, nil)
	mustCreateTable(t, c.node("node1"), "kv")
	leader := c.waitLeader(settle)
	if err := leader.Put(ctxT(t, settle), "kv", []byte("k"), []byte("v1")); err != nil {
		t.Fatal(err)
	}
	fs := c.followers(leader)
	f, other := fs[0], fs[1]
	calls := func(s *Store) int64 { return s.fwd.readIndexCalls.Load() }
	read := func(ctx context.Context, s *Store, want string) {
		t.Helper()
		v, err := s.Get(ctx, "kv", []byte("k"))
		if err != nil || string(v) != want {
			t.Fatalf("read: %q, %v; want %q", v, err, want)
		}
	}
	const reads = 5

	before := calls(f)
	for range reads {
		read(ctxT(t, settle), f, "v1")
	}
	if n := calls(f) - before; n != reads && !f.IsLeader() {
		t.Fatalf("%d reads without a session sent %d read-index requests; want %d", reads, n, reads)
	}

	ctx := WithReadSession(ctxT(t, settle))
	before, shared := calls(f), f.sessionReads.Load()
	for range reads {
		read(ctx, f, "v1")
	}
	if f.IsLeader() {
		t.Skip("the follower became the leader")
	}
	if n, s := calls(f)-before, f.sessionReads.Load()-shared; n != 1 || s != reads-1 {
		t.Fatalf("%d reads of one session sent %d read-index requests and shared %d; want 1 and %d", reads, n, s, reads-1)
	}

	// A write of the session: the next read takes a fresh read index and
	// sees the write, which was committed through the leader and may not
	// have been applied here when the write returned.
	if err := f.Put(ctx, "kv", []byte("k"), []byte("v2")); err != nil {
		t.Fatal(err)
	}
	before = calls(f)
	read(ctx, f, "v2")
	read(ctx, f, "v2")
	if n := calls(f) - before; n != 1 {
		t.Fatalf("two reads after the session's write sent %d read-index requests; want 1", n)
	}

	// The session is bound to the store it first read on: a read of it on
	// another store linearizes there, every time.
	before = calls(other)
	read(ctx, other, "v2")
	read(ctx, other, "v2")
	if n := calls(other) - before; n != 2 && !other.IsLeader() {
		t.Fatalf("two reads of a session bound elsewhere sent %d read-index requests; want 2", n)
	}

	// A write through another node: a later session's first read sees it.
	if err := other.Put(ctxT(t, settle), "kv", []byte("k"), []byte("v3")); err != nil {
		t.Fatal(err)
	}
	read(WithReadSession(ctxT(t, settle)), f, "v3")
}
