package secrets

import (
	"context"
	"errors"
	"testing"

	"github.com/custos-pki/custos/raftstore"
)

// testGuard stands for the API's authorisation: its compare is of one
// record in a table of its own, and Confirm answers what the test says.
type testGuard struct {
	e        *env
	want     []byte // the record's value the decision was made from
	confirm  error  // Confirm's answer
	confirms int
	onOps    func() // runs when the write asks for the compares, once
}

const tableGuard = "test.guard"

var guardKey1 = []byte("token")

func (g *testGuard) Ops() []raftstore.Op {
	if f := g.onOps; f != nil {
		g.onOps = nil
		f()
	}
	return []raftstore.Op{{Kind: raftstore.OpCompare, Table: tableGuard, Key: guardKey1, Old: g.want}}
}

func (g *testGuard) Confirm(ctx context.Context) error {
	g.confirms++
	if g.confirm != nil {
		return g.confirm
	}
	v, err := g.e.b.Get(ctx, tableGuard, guardKey1)
	if errors.Is(err, raftstore.ErrNotFound) {
		v, err = nil, nil
	}
	g.want = v
	return err
}

var errRevoked = errors.New("test: the token was revoked")

func newGuardEnv(t *testing.T) (*env, *testGuard, context.Context) {
	t.Helper()
	e := newEnv(t)
	e.mount(t, "kv", MountOptions{})
	if err := e.b.CreateTable(bg, tableGuard); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Put(bg, tableGuard, guardKey1, []byte("valid")); err != nil {
		t.Fatal(err)
	}
	g := &testGuard{e: e, want: []byte("valid")}
	return e, g, WithGuard(bg, g)
}

func TestGuardedWriteCommitsWithoutConfirming(t *testing.T) {
	e, g, ctx := newGuardEnv(t)
	v, err := e.s.Put(ctx, "kv", "a", []byte(`{"x":1}`), WriteOptions{})
	if err != nil || v.Version != 1 || g.confirms != 0 {
		t.Fatalf("Put = %+v, %v; %d confirms", v, err, g.confirms)
	}
	for _, fn := range []func() error{
		func() error {
			_, err := e.s.Patch(ctx, "kv", "a", []byte(`{"y":2}`), WriteOptions{CAS: intp(1)})
			return err
		},
		func() error { return e.s.Delete(ctx, "kv", "a") },
		func() error { return e.s.Undelete(ctx, "kv", "a", 2) },
		func() error { return e.s.Destroy(ctx, "kv", "a", 1) },
		func() error {
			_, err := e.s.PutMetadata(ctx, "kv", "a", MetadataUpdate{MaxVersions: intp(5)})
			return err
		},
		func() error { return e.s.DeleteMetadata(ctx, "kv", "a") },
	} {
		if err := fn(); err != nil {
			t.Fatal(err)
		}
	}
	if g.confirms != 0 {
		t.Fatalf("%d confirms for writes whose guard held", g.confirms)
	}
}

// A guard that fails at the commit is confirmed, never retried blindly:
// a revoked token's write changes nothing and gets Confirm's error.
func TestFailedGuardIsConfirmed(t *testing.T) {
	e, g, ctx := newGuardEnv(t)
	e.put(t, "kv", "a", `{"x":1}`)
	if err := e.b.Put(bg, tableGuard, guardKey1, []byte("revoked")); err != nil {
		t.Fatal(err)
	}
	before := e.dump(t)
	g.confirm = errRevoked
	writes := map[string]func() error{
		"put":     func() error { _, err := e.s.Put(ctx, "kv", "a", []byte(`{"x":2}`), WriteOptions{}); return err },
		"patch":   func() error { _, err := e.s.Patch(ctx, "kv", "a", []byte(`{"y":2}`), WriteOptions{}); return err },
		"delete":  func() error { return e.s.Delete(ctx, "kv", "a") },
		"destroy": func() error { return e.s.Destroy(ctx, "kv", "a", 1) },
		"put metadata": func() error {
			_, err := e.s.PutMetadata(ctx, "kv", "a", MetadataUpdate{MaxVersions: intp(5)})
			return err
		},
		"delete metadata": func() error { return e.s.DeleteMetadata(ctx, "kv", "a") },
		"move":            func() error { return e.s.Move(ctx, "kv", "a", "b") },
	}
	for name, fn := range writes {
		g.confirms = 0
		if err := fn(); !errors.Is(err, errRevoked) || g.confirms != 1 {
			t.Errorf("%s: %v after %d confirms, want the revocation after 1", name, err, g.confirms)
		}
	}
	if !sameDump(before, e.dump(t)) {
		t.Fatal("a write whose guard failed changed the store")
	}
	// Confirmed again (the change did not take the permission away), the
	// write commits once with the new guard.
	g.confirm = nil
	g.confirms = 0
	v, err := e.s.Put(ctx, "kv", "a", []byte(`{"x":2}`), WriteOptions{})
	if err != nil || v.Version != 2 || g.confirms != 1 || string(g.want) != "revoked" {
		t.Fatalf("Put = %+v, %v after %d confirms", v, err, g.confirms)
	}
}

// An error decided from state that may be behind is answered only after
// the guard is confirmed, and then from current state.
func TestErrorsUnderAGuardAreConfirmed(t *testing.T) {
	e, g, ctx := newGuardEnv(t)
	e.put(t, "kv", "a", `{"x":1}`)
	cases := map[string]struct {
		fn   func() error
		want error
	}{
		"cas mismatch":    {func() error { _, err := e.s.Put(ctx, "kv", "a", []byte(`{}`), WriteOptions{CAS: intp(7)}); return err }, ErrCASMismatch},
		"no such mount":   {func() error { _, err := e.s.Put(ctx, "nomount", "a", []byte(`{}`), WriteOptions{}); return err }, ErrMountNotFound},
		"no such secret":  {func() error { return e.s.DeleteMetadata(ctx, "kv", "nothing") }, ErrNotFound},
		"unknown version": {func() error { return e.s.Destroy(ctx, "kv", "a", 9) }, ErrVersionNotFound},
		"patch of absent": {func() error { _, err := e.s.Patch(ctx, "kv", "b", []byte(`{}`), WriteOptions{}); return err }, ErrNotFound},
	}
	for name, c := range cases {
		g.confirm, g.confirms = errRevoked, 0
		if err := c.fn(); !errors.Is(err, errRevoked) || g.confirms != 1 {
			t.Errorf("%s, revoked: %v after %d confirms", name, err, g.confirms)
		}
		g.confirm, g.confirms = nil, 0
		if err := c.fn(); !errors.Is(err, c.want) || g.confirms != 1 {
			t.Errorf("%s: %v after %d confirms, want %v after 1", name, err, g.confirms, c.want)
		}
	}
	// Input refused before any state is read needs no confirmation.
	g.confirms = 0
	if _, err := e.s.Put(ctx, "kv", "../x", []byte(`{}`), WriteOptions{}); !errors.Is(err, ErrInvalidPath) || g.confirms != 0 {
		t.Fatalf("bad path: %v after %d confirms", err, g.confirms)
	}
}

// txnStorage records the last transaction and counts linearizable reads.
type txnStorage struct {
	countingStorage
	last []raftstore.Op
}

func (c *txnStorage) Txn(ctx context.Context, ops []raftstore.Op) (raftstore.TxnResult, error) {
	c.last = ops
	return c.Storage.Txn(ctx, ops)
}

// A guarded write makes no linearizable read: it reads the mount from
// this node's state, so its transaction compares the mount too, after the
// guard's compares, which come first.
func TestGuardedWriteReadsLocallyAndComparesTheMount(t *testing.T) {
	e, g, ctx := newGuardEnv(t)
	e.put(t, "kv", "a", `{"x":1}`)
	ts := &txnStorage{countingStorage: countingStorage{Storage: e.b}}
	cfg := DefaultConfig()
	cfg.Storage, cfg.Keys, cfg.Clock = ts, e.k, e.clock
	s, err := New(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Put(ctx, "kv", "a", []byte(`{"x":2}`), WriteOptions{})
	if err != nil || v.Version != 2 || ts.linear != 0 || g.confirms != 0 {
		t.Fatalf("Put = %+v, %v with %d linearizable reads, %d confirms", v, err, ts.linear, g.confirms)
	}
	ops := ts.last
	if len(ops) < 3 || ops[0].Table != tableGuard || ops[1].Kind != raftstore.OpCompare || ops[1].Table != tableMounts || ops[1].Old == nil {
		t.Fatalf("transaction: %+v", ops)
	}
	// A change of the mount's settings between its read and the commit is
	// a conflict, not a guard failure: the write reads again and commits.
	g.onOps = func() {
		if _, err := e.s.UpdateMount(bg, "kv", MountUpdate{MaxVersions: intp(3)}); err != nil {
			t.Error(err)
		}
	}
	ts.linear = 0
	if _, err := s.Put(ctx, "kv", "a", []byte(`{"x":3}`), WriteOptions{}); err != nil || g.confirms != 0 || ts.linear != 1 {
		t.Fatalf("after a tune: %v, %d confirms, %d linearizable reads", err, g.confirms, ts.linear)
	}
	if md, err := e.s.ReadMetadata(bg, "kv", "a"); err != nil || md.CurrentVersion != 3 {
		t.Fatalf("metadata: %+v %v", md, err)
	}
}
