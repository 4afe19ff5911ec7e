package secrets

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/testutil"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

var bg = context.Background()

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is a Store on the real stack: a durable one-node raftstore, the kms
// barrier unsealed with a key file, and a KMS.
type env struct {
	raw   *raftstore.Store
	b     *kms.Barrier
	k     *kms.KMS
	s     *Store
	clock *fakeClock
}

func newEnv(t testing.TB) *env { return newEnvIn(t, t.TempDir()) }

func newEnvIn(t testing.TB, dir string) *env {
	t.Helper()
	e := &env{raw: testutil.SingleNodeIn(t, dir), clock: newFakeClock()}
	keyFile := filepath.Join(t.TempDir(), "unseal.key")
	if err := kms.GenerateKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.b, err = kms.NewBarrier(e.raw, e.clock); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.Init(bg, kms.SealConfig{KeyFile: keyFile}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.UnsealKeyFile(bg, keyFile); err != nil {
		t.Fatal(err)
	}
	e.k, e.s = newServices(t, e.b, e.clock)
	return e
}

// newServices builds a KMS and a Store over an unsealed barrier.
func newServices(t testing.TB, b *kms.Barrier, clock *fakeClock) (*kms.KMS, *Store) {
	t.Helper()
	kcfg := kms.DefaultConfig()
	kcfg.Clock = clock
	k, err := kms.New(b, kcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Storage, cfg.Keys, cfg.Clock = b, k, clock
	s, err := New(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k, s
}

func (e *env) mount(t testing.TB, name string, o MountOptions) {
	t.Helper()
	if _, err := e.s.CreateMount(bg, name, o); err != nil {
		t.Fatal(err)
	}
}

func (e *env) put(t testing.TB, mount, path, data string) VersionInfo {
	t.Helper()
	v, err := e.s.Put(bg, mount, path, []byte(data), WriteOptions{})
	if err != nil {
		t.Fatalf("put %s: %v", path, err)
	}
	return v
}

func (e *env) get(t testing.TB, mount, path string, n int) string {
	t.Helper()
	sec, err := e.s.Get(bg, mount, path, n)
	if err != nil {
		t.Fatalf("get %s v%d: %v", path, n, err)
	}
	return string(sec.Data)
}

// dump returns every key and stored (encrypted) value of the secrets
// tables, as raftstore holds them.
func (e *env) dump(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, table := range []string{tableMounts, tableLive, tableMeta, tableData} {
		o := raftstore.ListOptions{}
		for {
			page, err := e.raw.List(bg, table, o)
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range page.Items {
				out[table+" "+string(kv.Key)] = kv.Value
			}
			if page.Next == nil {
				break
			}
			o.After = page.Next
		}
	}
	return out
}

// count returns how many records a table holds.
func (e *env) count(t testing.TB, table string) int {
	t.Helper()
	n := 0
	for k := range e.dump(t) {
		if len(k) > len(table) && k[:len(table)+1] == table+" " {
			n++
		}
	}
	return n
}

func sameDump(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func intp(n int) *int { return &n }
