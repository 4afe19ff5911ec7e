package stepca

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/custos-pki/custos/raftstore"
	"github.com/smallstep/nosql"
	"github.com/smallstep/nosql/database"
)

func newTestDB(t *testing.T) (*DB, *raftstore.Store) {
	t.Helper()
	store, b := newBarrier(t)
	d, err := NewDB(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range []string{"t1", "t2"} {
		if err := d.CreateTable([]byte(tb)); err != nil {
			t.Fatal(err)
		}
	}
	return d, store
}

func TestTableName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"acme_keyID_accountID_index", "step.acme_keyid_accountid_index"},
		{"acme_external_account_keyID_provisionerID_index", "step.acme_external_account_keyid_provisionerid_index"},
		{"x509_certs", "step.x509_certs"},
		{"nonces", "step.nonces"},
		{"a/b", ""},
		{"", ""},
		{strings.Repeat("x", 60), ""},
	} {
		got, err := TableName([]byte(tc.in))
		if tc.want == "" {
			if !errors.Is(err, raftstore.ErrInvalidTable) {
				t.Errorf("TableName(%q) = %q, %v; want ErrInvalidTable", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("TableName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestDBSemantics(t *testing.T) {
	d, store := newTestDB(t)
	t1, k := []byte("t1"), []byte("k")

	t.Run("absent is ErrNotFound", func(t *testing.T) {
		if _, err := d.Get(t1, []byte("nope")); !nosql.IsErrNotFound(err) {
			t.Fatalf("Get absent: %v", err)
		}
		if _, err := d.Get([]byte("no_such_table"), k); !nosql.IsErrNotFound(err) {
			t.Fatalf("Get in a missing table: %v", err)
		}
	})
	t.Run("values are byte-exact and encrypted at rest", func(t *testing.T) {
		for _, v := range [][]byte{{}, {0}, []byte("plain"), bytes.Repeat([]byte{0xff, 0, 0x80}, 1000)} {
			if err := d.Set(t1, k, v); err != nil {
				t.Fatal(err)
			}
			got, err := d.Get(t1, k)
			if err != nil || !bytes.Equal(got, v) || got == nil {
				t.Fatalf("Get = %x, %v; want %x", got, err, v)
			}
		}
		_ = d.Set(t1, k, []byte("a secret value"))
		raw, err := store.Get(context.Background(), "step.t1", k)
		if err != nil || bytes.Contains(raw, []byte("a secret value")) {
			t.Fatalf("stored value holds the plaintext (%v)", err)
		}
	})
	t.Run("CmpAndSwap nil old inserts only if absent", func(t *testing.T) {
		key := []byte("cas")
		v, ok, err := d.CmpAndSwap(t1, key, nil, []byte("one"))
		if err != nil || !ok || string(v) != "one" {
			t.Fatalf("insert: %q %v %v", v, ok, err)
		}
		v, ok, err = d.CmpAndSwap(t1, key, nil, []byte("two"))
		if err != nil || ok || string(v) != "one" {
			t.Fatalf("second insert: %q %v %v; want the current value and no swap", v, ok, err)
		}
		v, ok, err = d.CmpAndSwap(t1, key, []byte("wrong"), []byte("two"))
		if err != nil || ok || string(v) != "one" {
			t.Fatalf("swap from a wrong value: %q %v %v", v, ok, err)
		}
		if v, ok, err = d.CmpAndSwap(t1, key, []byte("one"), []byte("two")); err != nil || !ok || string(v) != "two" {
			t.Fatalf("swap: %q %v %v", v, ok, err)
		}
		// Step saves an emptied index as nil: the key goes.
		if _, ok, err = d.CmpAndSwap(t1, key, []byte("two"), nil); err != nil || !ok {
			t.Fatalf("swap to nil: %v %v", ok, err)
		}
		if _, err := d.Get(t1, key); !nosql.IsErrNotFound(err) {
			t.Fatalf("after swap to nil: %v", err)
		}
		if v, ok, err = d.CmpAndSwap(t1, key, []byte("two"), []byte("x")); err != nil || ok || v != nil {
			t.Fatalf("swap on an absent key: %q %v %v; want nil, false", v, ok, err)
		}
	})
	t.Run("Update is atomic and a failed Get aborts it", func(t *testing.T) {
		tx := new(database.Tx)
		tx.Set(t1, []byte("u1"), []byte("v1"))
		tx.Set([]byte("t2"), []byte("u2"), []byte("v2"))
		tx.Get(t1, []byte("absent"))
		if err := d.Update(tx); !nosql.IsErrNotFound(err) {
			t.Fatalf("Update: %v; want ErrNotFound", err)
		}
		for _, key := range [][]byte{[]byte("u1"), []byte("u2")} {
			for _, tb := range []string{"t1", "t2"} {
				if _, err := d.Get([]byte(tb), key); !nosql.IsErrNotFound(err) {
					t.Fatalf("%s/%s written by an aborted Update: %v", tb, key, err)
				}
			}
		}
		// Step's DeleteNonce: read then delete, the read seeing the value.
		_ = d.Set(t1, []byte("n"), []byte("nonce"))
		tx = &database.Tx{}
		tx.Get(t1, []byte("n"))
		tx.Del(t1, []byte("n"))
		if err := d.Update(tx); err != nil || string(tx.Operations[0].Result) != "nonce" {
			t.Fatalf("get+delete: %v, result %q", err, tx.Operations[0].Result)
		}
		if err := d.Update(tx); !nosql.IsErrNotFound(err) {
			t.Fatalf("second get+delete: %v", err)
		}
	})
	t.Run("CmpOrRollback aborts on mismatch", func(t *testing.T) {
		_ = d.Set(t1, []byte("c"), []byte("cur"))
		tx := new(database.Tx)
		tx.Cmp(t1, []byte("c"), []byte("other"))
		tx.Set(t1, []byte("c2"), []byte("x"))
		if err := d.Update(tx); !errors.Is(err, ErrRolledBack) {
			t.Fatalf("Update: %v; want ErrRolledBack", err)
		}
		if _, err := d.Get(t1, []byte("c2")); !nosql.IsErrNotFound(err) {
			t.Fatal("rolled-back Update wrote")
		}
		tx = new(database.Tx)
		tx.Cmp(t1, []byte("c"), []byte("cur"))
		tx.Cmp(t1, []byte("c-absent"), nil)
		tx.Set(t1, []byte("c2"), []byte("x"))
		if err := d.Update(tx); err != nil {
			t.Fatalf("Update with matching compares: %v", err)
		}
	})
	t.Run("CmpAndSwap in Update reports and does not abort", func(t *testing.T) {
		_ = d.Set(t1, []byte("s"), []byte("old"))
		tx := new(database.Tx)
		tx.Cas(t1, []byte("s"), []byte("new"))
		tx.Operations[0].CmpValue = []byte("not-old")
		tx.Set(t1, []byte("s2"), []byte("written"))
		tx.Cas(t1, []byte("s2"), []byte("swapped"))
		tx.Operations[2].CmpValue = []byte("written") // sees the Set before it
		if err := d.Update(tx); err != nil {
			t.Fatal(err)
		}
		if e := tx.Operations[0]; e.Swapped || string(e.Result) != "old" {
			t.Fatalf("failed cas entry: swapped %v result %q", e.Swapped, e.Result)
		}
		if e := tx.Operations[2]; !e.Swapped || string(e.Result) != "swapped" {
			t.Fatalf("cas entry: swapped %v result %q", e.Swapped, e.Result)
		}
		if v, _ := d.Get(t1, []byte("s")); string(v) != "old" {
			t.Fatalf("s = %q", v)
		}
		if v, _ := d.Get(t1, []byte("s2")); string(v) != "swapped" {
			t.Fatalf("s2 = %q", v)
		}
	})
	t.Run("CreateTable is idempotent", func(t *testing.T) {
		for range 3 {
			if err := d.CreateTable(t1); err != nil {
				t.Fatal(err)
			}
		}
		if v, err := d.Get(t1, []byte("s2")); err != nil || string(v) != "swapped" {
			t.Fatalf("data lost by CreateTable: %q %v", v, err)
		}
		if err := d.DeleteTable(t1); !nosql.IsErrOpNotSupported(err) {
			t.Fatalf("DeleteTable: %v", err)
		}
	})
}

func TestDBListPages(t *testing.T) {
	d, _ := newTestDB(t)
	const n = raftstore.DefaultListLimit + 234
	for start := 0; start < n; start += 500 {
		tx := new(database.Tx)
		for i := start; i < min(n, start+500); i++ {
			tx.Set([]byte("t2"), fmt.Appendf(nil, "key-%05d", i), fmt.Appendf(nil, "value-%d", i))
		}
		if err := d.Update(tx); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := d.List([]byte("t2"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Fatalf("List returned %d entries, want %d", len(entries), n)
	}
	for i, e := range entries {
		if string(e.Key) != fmt.Sprintf("key-%05d", i) || string(e.Value) != fmt.Sprintf("value-%d", i) || string(e.Bucket) != "t2" {
			t.Fatalf("entry %d = %s/%s=%s", i, e.Bucket, e.Key, e.Value)
		}
	}
}

// TestDBConcurrentCAS increments a counter from many goroutines with
// CmpAndSwap: every successful swap is counted once.
func TestDBConcurrentCAS(t *testing.T) {
	d, _ := newTestDB(t)
	t1, key := []byte("t1"), []byte("counter")
	var wg sync.WaitGroup
	var mu sync.Mutex
	swaps := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				for {
					cur, err := d.Get(t1, key)
					if err != nil && !nosql.IsErrNotFound(err) {
						t.Error(err)
						return
					}
					next := bytes.Repeat([]byte("x"), len(cur)+1)
					if _, ok, err := d.CmpAndSwap(t1, key, cur, next); err != nil {
						t.Error(err)
						return
					} else if ok {
						mu.Lock()
						swaps++
						mu.Unlock()
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	v, err := d.Get(t1, key)
	if err != nil || len(v) != swaps || swaps != 40 {
		t.Fatalf("counter %d after %d swaps (%v)", len(v), swaps, err)
	}
}
