package kms

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

var bg = context.Background()

func TestSealConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  SealConfig
		ok   bool
	}{
		{"default", DefaultSealConfig(), true},
		{"one of one", SealConfig{Shares: 1, Threshold: 1}, true},
		{"255", SealConfig{Shares: 255, Threshold: 200}, true},
		{"key file", SealConfig{KeyFile: "/k"}, true},
		{"key file with shares", SealConfig{KeyFile: "/k", Shares: 5, Threshold: 3}, false},
		{"no shares", SealConfig{}, false},
		{"threshold above shares", SealConfig{Shares: 3, Threshold: 4}, false},
		{"threshold one of many", SealConfig{Shares: 3, Threshold: 1}, false},
		{"256 shares", SealConfig{Shares: 256, Threshold: 3}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestInitUnsealSeal(t *testing.T) {
	s := newMemStore()
	b, err := NewBarrier(s, newFakeClock())
	if err != nil {
		t.Fatal(err)
	}
	st, err := b.Status(bg)
	if err != nil || st.Initialized || !st.Sealed {
		t.Fatalf("status before init = %+v, %v", st, err)
	}
	if _, err := b.Unseal(bg, make([]byte, 33)); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("unseal before init: %v", err)
	}
	res, err := b.Init(bg, DefaultSealConfig())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Shares) != 5 || len(res.Shares[0]) != 33 {
		t.Fatalf("got %d shares of %d bytes", len(res.Shares), len(res.Shares[0]))
	}
	if _, err := b.Init(bg, DefaultSealConfig()); !errors.Is(err, ErrAlreadyInitialized) || !errors.Is(err, ErrConflict) {
		t.Fatalf("second init: %v", err)
	}
	if _, err := b.Get(bg, "app", []byte("k")); !errors.Is(err, ErrSealed) {
		t.Fatalf("Get while sealed: %v", err)
	}
	for i, sh := range res.Shares[1:4] {
		st, err := b.Unseal(bg, sh)
		if err != nil {
			t.Fatal(err)
		}
		if want := i + 1; i < 2 && (st.Progress != want || !st.Sealed) {
			t.Fatalf("after %d shares: %+v", want, st)
		}
		if i == 2 && (st.Sealed || st.Progress != 0 || st.Term != 1 || st.RootGen != 1) {
			t.Fatalf("after 3 shares: %+v", st)
		}
	}
	// A share more is harmless.
	if st, err := b.Unseal(bg, res.Shares[0]); err != nil || st.Sealed {
		t.Fatalf("unseal when unsealed: %+v, %v", st, err)
	}
	ctx := bg
	if err := b.CreateTable(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "app", []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	root := b.root
	b.Seal()
	if !b.Sealed() || b.root != nil || b.kr != nil {
		t.Fatal("Seal left keys in the barrier")
	}
	if !bytes.Equal(root, make([]byte, len(root))) {
		t.Fatal("Seal did not zero the root key")
	}
	if _, err := b.Get(ctx, "app", []byte("k")); !errors.Is(err, ErrSealed) || Category(err) != ErrSealed {
		t.Fatalf("Get after seal: %v", err)
	}
	for _, sh := range res.Shares[2:] {
		if _, err := b.Unseal(ctx, sh); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := b.Get(ctx, "app", []byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get after unseal = %q, %v", v, err)
	}
}

func TestUnsealBadShares(t *testing.T) {
	n := newNode(t)
	other := newNode(t) // shares of another KMS
	n.b.Seal()
	if _, err := n.b.Unseal(bg, make([]byte, 10)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short share: %v", err)
	}
	if _, err := n.b.Unseal(bg, n.shares[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := n.b.Unseal(bg, n.shares[0]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("repeated share: %v", err)
	}
	n.b.ResetUnseal()
	if st, _ := n.b.Status(bg); st.Progress != 0 {
		t.Fatalf("progress after reset = %d", st.Progress)
	}
	// Three wrong shares: refused, and the count starts again.
	var err error
	for _, sh := range other.shares[:3] {
		_, err = n.b.Unseal(bg, sh)
	}
	if !errors.Is(err, ErrBadUnsealKey) || Category(err) != ErrForbidden {
		t.Fatalf("wrong shares: %v", err)
	}
	if st, _ := n.b.Status(bg); !st.Sealed || st.Progress != 0 {
		t.Fatalf("status after wrong shares: %+v", st)
	}
	// Two right shares and one wrong one also fail.
	n.b.Unseal(bg, n.shares[0])
	n.b.Unseal(bg, n.shares[1])
	if _, err := n.b.Unseal(bg, other.shares[2]); !errors.Is(err, ErrBadUnsealKey) {
		t.Fatalf("mixed shares: %v", err)
	}
	n.unseal(t)
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "unseal.key")
	if err := GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("key file mode %v size %d", fi.Mode(), fi.Size())
	}
	if err := GenerateKeyFile(path); err == nil {
		t.Fatal("GenerateKeyFile overwrote a file")
	}
	s := newMemStore()
	b, _ := NewBarrier(s, nil)
	res, err := b.Init(bg, SealConfig{KeyFile: path})
	if err != nil || res.Shares != nil {
		t.Fatalf("Init = %+v, %v", res, err)
	}
	if _, err := b.Unseal(bg, make([]byte, 33)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Unseal on a key file seal: %v", err)
	}
	// Looser permissions, wrong size, another key, a directory: all refused.
	loose := filepath.Join(dir, "loose.key")
	os.WriteFile(loose, bytes.Repeat([]byte{1}, 32), 0o644)
	os.Chmod(loose, 0o644)
	short := filepath.Join(dir, "short.key")
	os.WriteFile(short, []byte("short"), 0o600)
	long := filepath.Join(dir, "long.key")
	os.WriteFile(long, make([]byte, 33), 0o600)
	other := filepath.Join(dir, "other.key")
	GenerateKeyFile(other)
	for _, tc := range []struct {
		path string
		want error
	}{
		{loose, ErrKeyFilePermissions},
		{short, ErrInvalid},
		{long, ErrInvalid},
		{dir, ErrInvalid},
		{filepath.Join(dir, "missing"), ErrInvalid},
		{other, ErrBadUnsealKey},
	} {
		if err := b.UnsealKeyFile(bg, tc.path); !errors.Is(err, tc.want) || !b.Sealed() {
			t.Errorf("UnsealKeyFile(%s) = %v, want %v", filepath.Base(tc.path), err, tc.want)
		}
	}
	if err := b.UnsealKeyFile(bg, path); err != nil || b.Sealed() {
		t.Fatalf("UnsealKeyFile = %v", err)
	}
}

func TestRekey(t *testing.T) {
	n := newNode(t)
	ctx := bg
	n.b.CreateTable(ctx, "app")
	n.b.Put(ctx, "app", []byte("k"), []byte("before rekey"))
	if _, err := n.b.Rekey(ctx, UnsealKey{Shares: n.shares[:2]}, SealConfig{Shares: 3, Threshold: 2}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rekey with too few shares: %v", err)
	}
	other := newNode(t)
	if _, err := n.b.Rekey(ctx, UnsealKey{Shares: other.shares[:3]}, SealConfig{Shares: 3, Threshold: 2}); !errors.Is(err, ErrBadUnsealKey) {
		t.Fatalf("rekey with wrong shares: %v", err)
	}
	res, err := n.b.Rekey(ctx, UnsealKey{Shares: n.shares[2:]}, SealConfig{Shares: 3, Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	n.b.Seal()
	// The old shares no longer unseal; the new ones do, and the data is there.
	for _, sh := range n.shares[:2] {
		n.b.Unseal(ctx, sh)
	}
	if !n.b.Sealed() {
		t.Fatal("old shares unsealed after rekey")
	}
	n.b.ResetUnseal()
	for _, sh := range res.Shares[1:] {
		if _, err := n.b.Unseal(ctx, sh); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := n.b.Get(ctx, "app", []byte("k")); err != nil || string(v) != "before rekey" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	// Rekey to a key file, then unseal with it.
	path := filepath.Join(t.TempDir(), "k")
	GenerateKeyFile(path)
	if res, err := n.b.Rekey(ctx, UnsealKey{Shares: res.Shares[:2]}, SealConfig{KeyFile: path}); err != nil || res.Shares != nil {
		t.Fatalf("rekey to key file: %+v, %v", res, err)
	}
	n.b.Seal()
	if err := n.b.UnsealKeyFile(ctx, path); err != nil {
		t.Fatal(err)
	}
	if st, _ := n.b.Status(ctx); st.Type != SealKeyFile || st.Sealed {
		t.Fatalf("status = %+v", st)
	}
}

func TestRotateRootKey(t *testing.T) {
	a := newNode(t)
	b := a.peer(t) // unsealed before the rotation
	c := a.peer(t) // will fall two rotations behind
	ctx := bg
	a.b.CreateTable(ctx, "app")
	a.b.Put(ctx, "app", []byte("old"), []byte("under root 1"))
	oldRoot := bytes.Clone(a.b.root)
	if err := a.b.RotateRootKey(ctx, UnsealKey{Shares: a.shares[1:4]}); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(oldRoot, a.b.root) || a.b.rootGen != 2 {
		t.Fatal("root key did not change")
	}
	if st, _ := a.b.Status(ctx); st.RootGen != 2 {
		t.Fatalf("status = %+v", st)
	}
	// b follows the rotation through the upgrade record.
	if err := b.b.ReloadKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if b.b.rootGen != 2 || !bytes.Equal(b.b.root, a.b.root) {
		t.Fatal("peer did not follow the root rotation")
	}
	// The same shares still unseal a fresh node, and old values still read.
	d := a.peer(t)
	if v, err := d.b.Get(ctx, "app", []byte("old")); err != nil || string(v) != "under root 1" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	// Two rotations behind: c cannot follow and seals itself.
	if err := a.b.RotateRootKey(ctx, UnsealKey{Shares: a.shares[:3]}); err != nil {
		t.Fatal(err)
	}
	// It finds out inside a KMS operation (a value under a term it does not
	// know), which must not deadlock with the KMS's seal hook.
	if _, err := a.b.RotateKeyring(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.k.CreateKey(ctx, "after", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.k.Key(ctx, "after"); !errors.Is(err, ErrSealed) || !c.b.Sealed() {
		t.Fatalf("read two rotations behind: %v, sealed=%v", err, c.b.Sealed())
	}
	c.unseal(t)
	if v, err := c.b.Get(ctx, "app", []byte("old")); err != nil || string(v) != "under root 1" {
		t.Fatalf("Get after re-unseal = %q, %v", v, err)
	}
	if err := a.b.RotateRootKey(ctx, UnsealKey{Shares: c.shares[:1]}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rotate with one share: %v", err)
	}
	a.b.Seal()
	if err := a.b.RotateRootKey(ctx, UnsealKey{Shares: a.shares[:3]}); !errors.Is(err, ErrSealed) {
		t.Fatalf("rotate while sealed: %v", err)
	}
}

func TestKeyringRotationAcrossNodes(t *testing.T) {
	a := newNode(t)
	b := a.peer(t)
	ctx := bg
	a.b.CreateTable(ctx, "app")
	a.b.Put(ctx, "app", []byte("t1"), []byte("term one"))
	term, err := a.b.RotateKeyring(ctx)
	if err != nil || term != 2 {
		t.Fatalf("RotateKeyring = %d, %v", term, err)
	}
	a.b.Put(ctx, "app", []byte("t2"), []byte("term two"))
	raw, _ := a.store.Get(ctx, "app", []byte("t2"))
	if got := raw[macSize : macSize+4]; !bytes.Equal(got, []byte{0, 0, 0, 2}) {
		t.Fatalf("value written under term %x", got)
	}
	// b has not reloaded: it reads the term-2 value by reloading once.
	if b.b.kr.terms[2] != nil {
		t.Fatal("peer knew term 2 already")
	}
	for _, k := range []string{"t1", "t2"} {
		if _, err := b.b.Get(ctx, "app", []byte(k)); err != nil {
			t.Fatalf("peer Get(%s): %v", k, err)
		}
	}
	if st, _ := b.b.Status(ctx); st.Term != 2 {
		t.Fatalf("peer term = %d", st.Term)
	}
	// Rotating on b builds on the stored keyring, not on b's memory.
	if term, err := b.b.RotateKeyring(ctx); err != nil || term != 3 {
		t.Fatalf("peer RotateKeyring = %d, %v", term, err)
	}
	// A term no keyring has is corruption, not a reason to loop.
	bad := bytes.Clone(raw)
	bad[macSize+3] = 99
	a.store.Put(ctx, "app", []byte("t2"), bad)
	if _, err := a.b.Get(ctx, "app", []byte("t2")); !errors.Is(err, ErrCorrupt) || Category(err) != nil {
		t.Fatalf("unknown term: %v", err)
	}
}
