package kms

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/custos-pki/custos/internal/testutil"
)

// TestNoSecretOnDisk writes known secrets and key material through every
// barrier and KMS operation on a real, durable raftstore node, takes a
// snapshot, closes the node and scans every file it wrote (Raft log, state
// file, snapshots) for those bytes.
func TestNoSecretOnDisk(t *testing.T) {
	dir := t.TempDir()
	store := testutil.SingleNodeIn(t, dir)
	ctx := context.Background()
	b, err := NewBarrier(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Init(ctx, DefaultSealConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range res.Shares[:3] {
		if _, err := b.Unseal(ctx, sh); err != nil {
			t.Fatal(err)
		}
	}
	k, err := New(b, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("correct horse battery staple: the database password")
	if err := b.CreateTable(ctx, "secrets"); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "secrets", []byte("db"), secret); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := b.CompareAndSwap(ctx, "secrets", []byte("cas"), nil, secret); err != nil || !ok {
		t.Fatal(ok, err)
	}
	needles := [][]byte{secret, b.root, b.kr.casKey}
	for _, tm := range b.kr.terms {
		needles = append(needles, tm.key)
	}
	needles = append(needles, res.Shares...)
	for _, typ := range []KeyType{TypeAES256GCM96, TypeAES256GCM96HKDF, TypeHMAC, TypeEd25519, TypeECDSAP256, TypeRSA2048} {
		name := "k-" + string(typ)
		if _, err := k.CreateKey(ctx, name, KeyOptions{Type: typ, Exportable: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := k.RotateKey(ctx, name); err != nil {
			t.Fatal(err)
		}
		for v := 1; v <= 2; v++ {
			exp, err := k.Export(ctx, name, v)
			if err != nil {
				t.Fatal(err)
			}
			needles = append(needles, exp.Key)
		}
		switch typ {
		case TypeAES256GCM96, TypeAES256GCM96HKDF:
			if _, err := k.Encrypt(ctx, name, secret, CryptOptions{}); err != nil {
				t.Fatal(err)
			}
			dk, err := k.GenerateDataKey(ctx, name, 256, true, CryptOptions{})
			if err != nil {
				t.Fatal(err)
			}
			needles = append(needles, dk.Plaintext)
		}
	}
	if err := k.FlushUsage(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	files := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for i, nd := range needles {
			if len(nd) < 16 {
				t.Fatalf("needle %d is too short to mean anything", i)
			}
			if bytes.Contains(raw, nd) {
				t.Errorf("needle %d (of %d bytes) found in %s", i, len(nd), filepath.Base(path))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 4 {
		t.Fatalf("scanned only %d files: the log, state and snapshot files should all be there", files)
	}
	// The scan can fail: the same bytes written unencrypted are found.
	probe := t.TempDir()
	raw := testutil.SingleNodeIn(t, probe)
	if err := raw.CreateTable(ctx, "plain"); err != nil {
		t.Fatal(err)
	}
	if err := raw.Put(ctx, "plain", []byte("k"), secret); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	found := false
	filepath.WalkDir(probe, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(path)
			found = found || bytes.Contains(b, secret)
		}
		return nil
	})
	if !found {
		t.Fatal("the scan does not find a secret written without the barrier")
	}
}
