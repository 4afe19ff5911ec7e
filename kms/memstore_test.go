package kms

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// memStore is an in-memory Storage with raftstore's semantics, for tests
// until the barrier tests move onto a single-node raftstore.Store.
type memStore struct {
	mu     sync.Mutex
	tables map[string]map[string][]byte
	calls  atomic.Int64
}

func newMemStore() *memStore { return &memStore{tables: map[string]map[string][]byte{}} }

func (s *memStore) CreateTable(_ context.Context, name string) error {
	s.calls.Add(1)
	if name == "" || len(name) > raftstore.MaxTableName || name[0] == '_' {
		return raftstore.ErrInvalidTable
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return raftstore.ErrInvalidTable
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tables[name] == nil {
		s.tables[name] = map[string][]byte{}
	}
	return nil
}

func (s *memStore) Get(_ context.Context, table string, key []byte, _ ...raftstore.ReadOption) ([]byte, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[table]
	if t == nil {
		return nil, fmt.Errorf("%w: %q", raftstore.ErrUnknownTable, table)
	}
	v, ok := t[string(key)]
	if !ok {
		return nil, raftstore.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (s *memStore) Put(ctx context.Context, table string, key, value []byte) error {
	_, err := s.Txn(ctx, []raftstore.Op{{Kind: raftstore.OpPut, Table: table, Key: key, Value: value}})
	return err
}

func (s *memStore) Delete(ctx context.Context, table string, key []byte) error {
	_, err := s.Txn(ctx, []raftstore.Op{{Kind: raftstore.OpDelete, Table: table, Key: key}})
	return err
}

func (s *memStore) CompareAndSwap(ctx context.Context, table string, key, old, new []byte) (bool, []byte, error) {
	res, err := s.Txn(ctx, []raftstore.Op{{Kind: raftstore.OpCAS, Table: table, Key: key, Old: old, Value: new}})
	if err != nil || !res.Succeeded {
		return false, res.Values[0], err
	}
	return true, nil, nil
}

// Txn mirrors raftstore's applyTxn: conditions are checked in order against
// the state as changed by earlier operations; writes happen only if all hold.
func (s *memStore) Txn(_ context.Context, ops []raftstore.Op) (raftstore.TxnResult, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	res := raftstore.TxnResult{FailedOp: -1, Values: make([][]byte, len(ops))}
	type pending struct {
		v   []byte
		del bool
	}
	overlay := map[string]pending{}
	for i, op := range ops {
		t := s.tables[op.Table]
		if t == nil {
			return raftstore.TxnResult{FailedOp: i, Values: make([][]byte, len(ops))}, fmt.Errorf("%w: %q", raftstore.ErrUnknownTable, op.Table)
		}
		id := op.Table + "\x00" + string(op.Key)
		v, found := t[string(op.Key)]
		if p, ok := overlay[id]; ok {
			v, found = p.v, !p.del
		}
		ok := true
		switch op.Kind {
		case raftstore.OpGet:
			res.Values[i], ok = bytes.Clone(v), found
		case raftstore.OpCAS, raftstore.OpCompare:
			switch {
			case op.Old == nil:
				ok = !found
			case op.Prefix:
				ok = found && bytes.HasPrefix(v, op.Old)
			default:
				ok = found && bytes.Equal(v, op.Old)
			}
			if !ok {
				res.Values[i] = bytes.Clone(v)
			}
		}
		if !ok {
			res.FailedOp = i
			return res, nil
		}
		switch {
		case op.Kind == raftstore.OpPut || op.Kind == raftstore.OpCAS && !op.Delete:
			overlay[id] = pending{v: bytes.Clone(op.Value)}
		case op.Kind == raftstore.OpDelete || op.Kind == raftstore.OpCAS:
			overlay[id] = pending{del: true}
		}
	}
	for _, op := range ops {
		p, ok := overlay[op.Table+"\x00"+string(op.Key)]
		if !ok {
			continue
		}
		if p.del {
			delete(s.tables[op.Table], string(op.Key))
		} else {
			if p.v == nil {
				p.v = []byte{}
			}
			s.tables[op.Table][string(op.Key)] = p.v
		}
	}
	res.Succeeded = true
	return res, nil
}

func (s *memStore) List(_ context.Context, table string, o raftstore.ListOptions, _ ...raftstore.ReadOption) (raftstore.ListPage, error) {
	s.calls.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[table]
	if t == nil {
		return raftstore.ListPage{}, fmt.Errorf("%w: %q", raftstore.ErrUnknownTable, table)
	}
	limit := o.Limit
	if limit <= 0 || limit > raftstore.DefaultListLimit {
		limit = raftstore.DefaultListLimit
	}
	var keys []string
	for k := range t {
		if bytes.HasPrefix([]byte(k), o.Prefix) && (o.After == nil || k > string(o.After)) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var page raftstore.ListPage
	for _, k := range keys {
		if len(page.Items) == limit {
			page.Next = bytes.Clone(page.Items[limit-1].Key)
			break
		}
		kv := raftstore.KV{Key: []byte(k)}
		if !o.KeysOnly {
			kv.Value = bytes.Clone(t[k])
		}
		page.Items = append(page.Items, kv)
	}
	return page, nil
}

// dump returns every table, key and value, for before/after comparisons
// and for scanning what storage holds.
func (s *memStore) dump() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]byte{}
	for tn, t := range s.tables {
		for k, v := range t {
			out[tn+"/"+k] = bytes.Clone(v)
		}
	}
	return out
}

// rawContains reports whether any table name, key or value in storage
// contains needle.
func (s *memStore) rawContains(needle []byte) bool {
	for k, v := range s.dump() {
		if bytes.Contains([]byte(k), needle) || bytes.Contains(v, needle) {
			return true
		}
	}
	return false
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testNode is one unsealed node: a barrier and a key manager over a store.
type testNode struct {
	store  *memStore
	clock  *fakeClock
	b      *Barrier
	k      *KMS
	shares [][]byte
}

// newNode returns an initialised, unsealed node over a fresh store.
func newNode(t testing.TB) *testNode {
	t.Helper()
	n := &testNode{store: newMemStore(), clock: newFakeClock()}
	var err error
	if n.b, err = NewBarrier(n.store, n.clock); err != nil {
		t.Fatal(err)
	}
	res, err := n.b.Init(context.Background(), DefaultSealConfig())
	if err != nil {
		t.Fatal(err)
	}
	n.shares = res.Shares
	n.unseal(t)
	cfg := DefaultConfig()
	cfg.Clock = n.clock
	if n.k, err = New(n.b, cfg); err != nil {
		t.Fatal(err)
	}
	return n
}

// peer returns a second node over the same store and shares, unsealed.
func (n *testNode) peer(t testing.TB) *testNode {
	t.Helper()
	p := &testNode{store: n.store, clock: n.clock, shares: n.shares}
	var err error
	if p.b, err = NewBarrier(n.store, n.clock); err != nil {
		t.Fatal(err)
	}
	p.unseal(t)
	cfg := DefaultConfig()
	cfg.Clock = n.clock
	if p.k, err = New(p.b, cfg); err != nil {
		t.Fatal(err)
	}
	return p
}

func (n *testNode) unseal(t testing.TB) {
	t.Helper()
	for _, s := range n.shares[:3] {
		if _, err := n.b.Unseal(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	if n.b.Sealed() {
		t.Fatal("still sealed after 3 shares")
	}
}
