package kms

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/custos-pki/custos/raftstore"
)

func TestBarrierRoundTrip(t *testing.T) {
	n := newNode(t)
	b, ctx := n.b, bg
	if err := b.CreateTable(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	secret := []byte("the launch codes are 0000")
	if err := b.Put(ctx, "app", []byte("k1"), secret); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "app", []byte("empty"), nil); err != nil {
		t.Fatal(err)
	}
	got, err := b.Get(ctx, "app", []byte("k1"))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if got, err := b.Get(ctx, "app", []byte("empty")); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Get(empty) = %#v, %v", got, err)
	}
	raw, _ := n.store.Get(ctx, "app", []byte("k1"))
	if len(raw) != len(secret)+BarrierOverhead || bytes.Contains(raw, secret) {
		t.Fatalf("stored %d bytes: not the ciphertext expected", len(raw))
	}
	if _, err := b.Get(ctx, "app", []byte("missing")); !errors.Is(err, raftstore.ErrNotFound) {
		t.Fatalf("Get(missing): %v", err)
	}
	for i := range 5 {
		b.Put(ctx, "app", fmt.Appendf(nil, "list/%d", i), fmt.Appendf(nil, "value %d", i))
	}
	page, err := b.List(ctx, "app", raftstore.ListOptions{Prefix: []byte("list/"), Limit: 3})
	if err != nil || len(page.Items) != 3 || string(page.Items[2].Value) != "value 2" || page.Next == nil {
		t.Fatalf("List = %+v, %v", page, err)
	}
	page, err = b.List(ctx, "app", raftstore.ListOptions{Prefix: []byte("list/"), After: page.Next, KeysOnly: true})
	if err != nil || len(page.Items) != 2 || page.Items[0].Value != nil || page.Next != nil {
		t.Fatalf("List page 2 = %+v, %v", page, err)
	}
	if err := b.Delete(ctx, "app", []byte("k1")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "app", []byte("k1")); !errors.Is(err, raftstore.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
}

// A stored value moved to another key or table, altered or truncated, does
// not decrypt.
func TestBarrierBindsValueToKey(t *testing.T) {
	n := newNode(t)
	b, s, ctx := n.b, n.store, bg
	b.CreateTable(ctx, "app")
	b.CreateTable(ctx, "other")
	b.Put(ctx, "app", []byte("a"), []byte("value of a"))
	raw, _ := s.Get(ctx, "app", []byte("a"))
	// Length prefixes keep ("app", "a") apart from ("ap", "pa").
	s.CreateTable(ctx, "ap")
	moves := []struct {
		table, key string
	}{{"app", "b"}, {"other", "a"}, {"ap", "pa"}}
	for _, m := range moves {
		s.Put(ctx, m.table, []byte(m.key), raw)
		if _, err := b.Get(ctx, m.table, []byte(m.key)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("value moved to %s/%s: %v", m.table, m.key, err)
		}
	}
	for i := range raw {
		bad := bytes.Clone(raw)
		bad[i] ^= 0x80
		s.Put(ctx, "app", []byte("a"), bad)
		if _, err := b.Get(ctx, "app", []byte("a")); err == nil {
			t.Fatalf("flipped byte %d: decrypted", i)
		}
	}
	for _, l := range []int{0, 1, macSize, BarrierOverhead - 1, len(raw) - 1} {
		s.Put(ctx, "app", []byte("a"), raw[:l])
		if _, err := b.Get(ctx, "app", []byte("a")); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: %v", l, err)
		}
	}
}

func TestBarrierCompareAndSwap(t *testing.T) {
	n := newNode(t)
	b, ctx := n.b, bg
	b.CreateTable(ctx, "app")
	k := []byte("k")
	// Insert only if absent.
	if ok, cur, err := b.CompareAndSwap(ctx, "app", k, nil, []byte("v1")); !ok || cur != nil || err != nil {
		t.Fatalf("insert: %v %q %v", ok, cur, err)
	}
	if ok, cur, err := b.CompareAndSwap(ctx, "app", k, nil, []byte("v9")); ok || string(cur) != "v1" || err != nil {
		t.Fatalf("insert over existing: %v %q %v", ok, cur, err)
	}
	// Stored ciphertexts differ each write; CAS compares plaintexts.
	raw1, _ := n.store.Get(ctx, "app", k)
	b.Put(ctx, "app", k, []byte("v1"))
	raw2, _ := n.store.Get(ctx, "app", k)
	if bytes.Equal(raw1[macSize:], raw2[macSize:]) {
		t.Fatal("two writes of one plaintext gave one ciphertext")
	}
	if ok, _, err := b.CompareAndSwap(ctx, "app", k, []byte("v1"), []byte("v2")); !ok || err != nil {
		t.Fatalf("swap v1->v2: %v %v", ok, err)
	}
	if ok, cur, _ := b.CompareAndSwap(ctx, "app", k, []byte("v1"), []byte("v3")); ok || string(cur) != "v2" {
		t.Fatalf("stale swap: %v %q", ok, cur)
	}
	// A plaintext that is a prefix of the current one does not match.
	if ok, _, _ := b.CompareAndSwap(ctx, "app", k, []byte("v"), []byte("v3")); ok {
		t.Fatal("prefix of the plaintext matched")
	}
	if ok, cur, _ := b.CompareAndSwap(ctx, "app", []byte("absent"), []byte("x"), []byte("y")); ok || cur != nil {
		t.Fatalf("swap of an absent key: %v %q", ok, cur)
	}
	// After a keyring rotation the MAC key is unchanged: CAS still matches.
	if _, err := b.RotateKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := b.CompareAndSwap(ctx, "app", k, []byte("v2"), []byte{}); !ok || err != nil {
		t.Fatalf("swap after rotation: %v %v", ok, err)
	}
	if ok, _, _ := b.CompareAndSwap(ctx, "app", k, []byte{}, []byte("v4")); !ok {
		t.Fatal("swap from the empty plaintext failed")
	}
	// A MAC stored under one key does not match the same plaintext at another.
	b.Put(ctx, "app", []byte("k2"), []byte("v4"))
	r1, _ := n.store.Get(ctx, "app", k)
	r2, _ := n.store.Get(ctx, "app", []byte("k2"))
	if bytes.Equal(r1[:macSize], r2[:macSize]) {
		t.Fatal("equal plaintexts at two keys have equal MACs")
	}
}

func TestBarrierTxn(t *testing.T) {
	n := newNode(t)
	b, ctx := n.b, bg
	b.CreateTable(ctx, "app")
	b.Put(ctx, "app", []byte("a"), []byte("A"))
	res, err := b.Txn(ctx, []raftstore.Op{
		{Kind: raftstore.OpGet, Table: "app", Key: []byte("a")},
		{Kind: raftstore.OpCAS, Table: "app", Key: []byte("a"), Old: []byte("A"), Value: []byte("A2")},
		{Kind: raftstore.OpPut, Table: "app", Key: []byte("b"), Value: []byte("B")},
		{Kind: raftstore.OpCAS, Table: "app", Key: []byte("c"), Old: nil, Value: []byte("C")},
	})
	if err != nil || !res.Succeeded || string(res.Values[0]) != "A" {
		t.Fatalf("Txn = %+v, %v", res, err)
	}
	for k, want := range map[string]string{"a": "A2", "b": "B", "c": "C"} {
		if v, _ := b.Get(ctx, "app", []byte(k)); string(v) != want {
			t.Fatalf("%s = %q, want %q", k, v, want)
		}
	}
	// A failed compare aborts everything and reports the current plaintext.
	before := n.store.dump()
	res, err = b.Txn(ctx, []raftstore.Op{
		{Kind: raftstore.OpPut, Table: "app", Key: []byte("d"), Value: []byte("D")},
		{Kind: raftstore.OpCAS, Table: "app", Key: []byte("a"), Old: []byte("A"), Delete: true},
	})
	if err != nil || res.Succeeded || res.FailedOp != 1 || string(res.Values[1]) != "A2" {
		t.Fatalf("failed Txn = %+v, %v", res, err)
	}
	// Get-or-abort on a missing key aborts too.
	res, _ = b.Txn(ctx, []raftstore.Op{
		{Kind: raftstore.OpGet, Table: "app", Key: []byte("missing")},
		{Kind: raftstore.OpDelete, Table: "app", Key: []byte("a")},
	})
	if res.Succeeded || res.FailedOp != 0 {
		t.Fatalf("get-or-abort = %+v", res)
	}
	if !mapsEqual(before, n.store.dump()) {
		t.Fatal("an aborted transaction changed storage")
	}
	// A compare checks the plaintext (or absence) and writes nothing.
	res, err = b.Txn(ctx, []raftstore.Op{
		{Kind: raftstore.OpCompare, Table: "app", Key: []byte("a"), Old: []byte("A2")},
		{Kind: raftstore.OpCompare, Table: "app", Key: []byte("missing")},
	})
	if err != nil || !res.Succeeded || !mapsEqual(before, n.store.dump()) {
		t.Fatalf("compare = %+v, %v", res, err)
	}
	res, err = b.Txn(ctx, []raftstore.Op{
		{Kind: raftstore.OpCompare, Table: "app", Key: []byte("a"), Old: []byte("A")},
		{Kind: raftstore.OpPut, Table: "app", Key: []byte("d"), Value: []byte("D")},
	})
	if err != nil || res.Succeeded || res.FailedOp != 0 || string(res.Values[0]) != "A2" || !mapsEqual(before, n.store.dump()) {
		t.Fatalf("failed compare = %+v, %v", res, err)
	}
	// CAS delete with the right plaintext.
	res, _ = b.Txn(ctx, []raftstore.Op{{Kind: raftstore.OpCAS, Table: "app", Key: []byte("a"), Old: []byte("A2"), Delete: true}})
	if !res.Succeeded {
		t.Fatal("CAS delete failed")
	}
	for _, op := range []raftstore.Op{
		{Kind: raftstore.OpCAS, Table: "app", Key: []byte("b"), Old: []byte("B"), Prefix: true},
		{Kind: raftstore.OpCompare, Table: "app", Key: []byte("b"), Old: []byte("B"), Prefix: true},
		{Kind: raftstore.OpCompare, Table: "app", Key: []byte("b"), Value: []byte("B")},
		{Kind: 99, Table: "app", Key: []byte("b")},
		{Kind: raftstore.OpGet, Table: "kms.keys", Key: []byte("b")},
	} {
		if _, err := b.Txn(ctx, []raftstore.Op{op}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Txn(%+v): %v", op, err)
		}
	}
}

func mapsEqual(a, b map[string][]byte) bool {
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

func TestBarrierRefusesReservedTablesAndSealed(t *testing.T) {
	n := newNode(t)
	b, ctx := n.b, bg
	for _, tbl := range []string{tableCore, tableKeys, tableKeyMat, "kms.anything"} {
		_, err1 := b.Get(ctx, tbl, []byte("seal"))
		err2 := b.Put(ctx, tbl, []byte("seal"), nil)
		err3 := b.Delete(ctx, tbl, []byte("seal"))
		_, _, err4 := b.CompareAndSwap(ctx, tbl, []byte("seal"), nil, nil)
		_, err5 := b.List(ctx, tbl, raftstore.ListOptions{})
		err6 := b.CreateTable(ctx, tbl)
		for i, err := range []error{err1, err2, err3, err4, err5, err6} {
			if !errors.Is(err, ErrReservedTable) {
				t.Errorf("%s op %d: %v", tbl, i, err)
			}
		}
	}
	b.CreateTable(ctx, "app")
	b.Put(ctx, "app", []byte("k"), []byte("v"))
	b.Seal()
	before := n.store.dump()
	_, err1 := b.Get(ctx, "app", []byte("k"))
	err2 := b.Put(ctx, "app", []byte("k"), []byte("w"))
	err3 := b.Delete(ctx, "app", []byte("k"))
	_, _, err4 := b.CompareAndSwap(ctx, "app", []byte("k"), nil, nil)
	_, err5 := b.List(ctx, "app", raftstore.ListOptions{KeysOnly: true})
	_, err6 := b.Txn(ctx, []raftstore.Op{{Kind: raftstore.OpDelete, Table: "app", Key: []byte("k")}})
	_, err7 := b.RotateKeyring(ctx)
	err8 := b.ReloadKeyring(ctx)
	for i, err := range []error{err1, err2, err3, err4, err5, err6, err7, err8} {
		if !errors.Is(err, ErrSealed) {
			t.Errorf("sealed op %d: %v", i, err)
		}
	}
	if !mapsEqual(before, n.store.dump()) {
		t.Fatal("a sealed barrier changed storage")
	}
	if err := b.CreateTable(ctx, "new"); err != nil {
		t.Fatalf("CreateTable while sealed: %v", err)
	}
}

// Everything written through the barrier and the key manager is absent from
// storage in the clear: values, root key, keyring terms, key material. (The
// on-disk scan over a real raftstore node belongs to the raftstore tests.)
func TestStorageHoldsNoPlaintext(t *testing.T) {
	n := newNode(t)
	b, k, ctx := n.b, n.k, bg
	b.CreateTable(ctx, "secrets")
	secret := []byte("correct horse battery staple")
	b.Put(ctx, "secrets", []byte("db"), secret)
	b.CompareAndSwap(ctx, "secrets", []byte("cas"), nil, secret)
	needles := [][]byte{secret, b.root, b.kr.casKey}
	for _, tm := range b.kr.terms {
		needles = append(needles, tm.key)
	}
	for _, typ := range []KeyType{TypeAES256GCM96, TypeAES256GCM96HKDF, TypeHMAC, TypeEd25519, TypeECDSAP256, TypeRSA2048} {
		name := "k-" + string(typ)
		if _, err := k.CreateKey(ctx, name, KeyOptions{Type: typ, Exportable: true}); err != nil {
			t.Fatal(err)
		}
		exp, err := k.Export(ctx, name, 0)
		if err != nil {
			t.Fatal(err)
		}
		needles = append(needles, exp.Key)
		if typ == TypeAES256GCM96HKDF {
			dk, _ := k.GenerateDataKey(ctx, name, 256, true, CryptOptions{})
			needles = append(needles, dk.Plaintext)
		}
	}
	for i, nd := range needles {
		if len(nd) < 16 {
			t.Fatalf("needle %d too short to mean anything", i)
		}
		if n.store.rawContains(nd) {
			t.Errorf("needle %d found in storage", i)
		}
	}
}

// Concurrent read-modify-write loops through the barrier's CAS lose no
// update, although every write stores a different ciphertext.
func TestBarrierConcurrentCAS(t *testing.T) {
	n := newNode(t)
	b, ctx := n.b, bg
	b.CreateTable(ctx, "app")
	key := []byte("counter")
	b.Put(ctx, "app", key, []byte("0"))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 25 {
				for {
					cur, err := b.Get(ctx, "app", key)
					if err != nil {
						t.Error(err)
						return
					}
					v, _ := strconv.Atoi(string(cur))
					ok, _, err := b.CompareAndSwap(ctx, "app", key, cur, []byte(strconv.Itoa(v+1)))
					if err != nil {
						t.Error(err)
						return
					}
					if ok {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	if v, _ := b.Get(ctx, "app", key); string(v) != "100" {
		t.Fatalf("counter = %s, want 100", v)
	}
}
