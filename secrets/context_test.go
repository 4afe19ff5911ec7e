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

// answersCurrent is a caller's context type that marks its calls as
// WithStateCurrent does, by answering StateCurrentKey.
type answersCurrent struct{ context.Context }

func (c answersCurrent) Value(k any) any {
	if k == StateCurrentKey() {
		return true
	}
	return c.Context.Value(k)
}

// A call makes one linearizable read, and none when its caller says it made
// one (WithStateCurrent); a mount this node does not know is still looked
// up linearizably before it is reported missing.
func TestStateCurrentReadsCount(t *testing.T) {
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
	cur := WithStateCurrent(bg)
	for _, tc := range []struct {
		name string
		ctx  context.Context
		call func(ctx context.Context) error
		want int
	}{
		{"get", bg, func(ctx context.Context) error { _, err := s.Get(ctx, "kv", "a", 0); return err }, 1},
		{"get, state current", cur, func(ctx context.Context) error { _, err := s.Get(ctx, "kv", "a", 0); return err }, 0},
		{"get, a context answering StateCurrentKey", answersCurrent{bg}, func(ctx context.Context) error { _, err := s.Get(ctx, "kv", "a", 0); return err }, 0},
		{"put", bg, func(ctx context.Context) error {
			_, err := s.Put(ctx, "kv", "a", []byte(`{"k":"w"}`), WriteOptions{})
			return err
		}, 1},
		{"put, state current", cur, func(ctx context.Context) error {
			_, err := s.Put(ctx, "kv", "a", []byte(`{"k":"x"}`), WriteOptions{})
			return err
		}, 0},
		{"metadata, state current", cur, func(ctx context.Context) error { _, err := s.ReadMetadata(ctx, "kv", "a"); return err }, 0},
		{"unknown mount, state current", cur, func(ctx context.Context) error {
			if _, err := s.Get(ctx, "nope", "a", 0); !errors.Is(err, ErrMountNotFound) {
				t.Errorf("unknown mount: %v", err)
			}
			return nil
		}, 1},
	} {
		cs.linear = 0
		if err := tc.call(tc.ctx); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if cs.linear != tc.want {
			t.Errorf("%s: %d linearizable reads, want %d", tc.name, cs.linear, tc.want)
		}
	}
}
