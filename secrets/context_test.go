package secrets

import (
	"context"
	"errors"
	"testing"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

// countingStorage counts the linearizable reads (Gets and Lists without a
// read option) that pass through to the barrier.
type countingStorage struct {
	kms.Storage
	linear int
}

func (c *countingStorage) Get(ctx context.Context, table string, key []byte, opts ...raftstore.ReadOption) ([]byte, error) {
	if len(opts) == 0 {
		c.linear++
	}
	return c.Storage.Get(ctx, table, key, opts...)
}

func (c *countingStorage) List(ctx context.Context, table string, o raftstore.ListOptions, opts ...raftstore.ReadOption) (raftstore.ListPage, error) {
	if len(opts) == 0 {
		c.linear++
	}
	return c.Storage.List(ctx, table, o, opts...)
}

// Within a read session (an API request's), a call's mount read shares the
// read index an earlier read of the session took; a write ends the sharing,
// so the next read takes a fresh one; a mount this node does not know is
// reported after a read of current state.
func TestReadSessionReadsCount(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "kv", MountOptions{})
	e.put(t, "kv", "a", `{"k":"v"}`)
	cs := &countingStorage{Storage: e.b}
	cfg := DefaultConfig()
	cfg.Storage, cfg.Keys, cfg.Clock = cs, e.k, e.clock
	s, err := New(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sess := raftstore.WithReadSession(bg)
	get := func(ctx context.Context) error { _, err := s.Get(ctx, "kv", "a", 0); return err }
	for _, tc := range []struct {
		name string
		ctx  context.Context
		call func(ctx context.Context) error
		want int // read indexes taken
	}{
		{"get", bg, get, 1},
		{"get, first of a session", sess, get, 1},
		{"get, later in the session", sess, get, 0},
		{"metadata, later in the session", sess, func(ctx context.Context) error { _, err := s.ReadMetadata(ctx, "kv", "a"); return err }, 0},
		{"put, later in the session", sess, func(ctx context.Context) error {
			_, err := s.Put(ctx, "kv", "a", []byte(`{"k":"x"}`), WriteOptions{})
			return err
		}, 0},
		{"get, after the session's put", sess, get, 1},
		{"unknown mount, fresh session", raftstore.WithReadSession(bg), func(ctx context.Context) error {
			if _, err := s.Get(ctx, "nope", "a", 0); !errors.Is(err, ErrMountNotFound) {
				t.Errorf("unknown mount: %v", err)
			}
			return nil
		}, 1},
	} {
		cs.linear = 0
		shared := e.raw.ReadCounts().SessionReads
		if err := tc.call(tc.ctx); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := cs.linear - int(e.raw.ReadCounts().SessionReads-shared); got != tc.want {
			t.Errorf("%s: %d read indexes taken (%d linearizable reads), want %d", tc.name, got, cs.linear, tc.want)
		}
	}
}
