package kms

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

func ptr[T any](v T) *T { return &v }

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"nil clock":        func(c *Config) { c.Clock = nil },
		"zero ttl":         func(c *Config) { c.CacheTTL = 0 },
		"zero interval":    func(c *Config) { c.MaintenanceInterval = 0 },
		"default < min":    func(c *Config) { c.DefaultDeletionWindow = c.MinDeletionWindow - 1 },
		"negative min":     func(c *Config) { c.MinDeletionWindow = -1 },
		"zero batch limit": func(c *Config) { c.MaxBatch = 0 },
	} {
		c := DefaultConfig()
		mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := New(nil, DefaultConfig()); !errors.Is(err, ErrInvalid) {
		t.Errorf("New(nil): %v", err)
	}
	if _, err := NewBarrier(nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewBarrier(nil): %v", err)
	}
}

func TestCreateKeyEveryType(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	types := []KeyType{TypeAES256GCM96, TypeAES256GCM96HKDF, TypeECDSAP256, TypeECDSAP384, TypeEd25519, TypeRSA2048, TypeHMAC}
	if !testing.Short() {
		types = append(types, TypeRSA3072, TypeRSA4096)
	}
	for _, typ := range types {
		t.Run(string(typ), func(t *testing.T) {
			ki, err := k.CreateKey(ctx, "key-"+string(typ), KeyOptions{Type: typ})
			if err != nil {
				t.Fatal(err)
			}
			if ki.Type != typ || ki.Latest != 1 || ki.MinDecryptionVersion != 1 || ki.Exportable ||
				len(ki.Versions) != 1 || ki.Versions[0].State != StateActive || !ki.Created.Equal(n.clock.Now()) {
				t.Fatalf("KeyInfo = %+v", ki)
			}
			pub, err := k.PublicKey(ctx, ki.Name, 0)
			if !typ.Asymmetric() {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("PublicKey of %s: %v", typ, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch p := pub.(type) {
			case *ecdsa.PublicKey:
				if p.Curve.Params().BitSize != map[KeyType]int{TypeECDSAP256: 256, TypeECDSAP384: 384}[typ] {
					t.Fatalf("curve %s", p.Curve.Params().Name)
				}
			case *rsa.PublicKey:
				if bits := p.N.BitLen(); "rsa-"+strconv.Itoa(bits) != string(typ) {
					t.Fatalf("RSA %d bits", bits)
				}
			case ed25519.PublicKey:
			default:
				t.Fatalf("public key %T", pub)
			}
		})
	}
	if ki, err := k.CreateKey(ctx, "default", KeyOptions{}); err != nil || ki.Type != DefaultKeyType {
		t.Fatalf("default type: %+v, %v", ki, err)
	}
	names, err := k.ListKeys(ctx)
	if err != nil || len(names) != len(types)+1 || names[0] != "default" {
		t.Fatalf("ListKeys = %v, %v", names, err)
	}
}

func TestCreateKeyBadInput(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "exists", KeyOptions{})
	before := n.store.dump()
	for _, tc := range []struct {
		name string
		key  string
		o    KeyOptions
		want error
	}{
		{"unknown type", "k", KeyOptions{Type: "aes128-ecb"}, ErrInvalid},
		{"empty name", "", KeyOptions{}, ErrInvalid},
		{"slash in name", "a/b", KeyOptions{}, ErrInvalid},
		{"leading dot", ".k", KeyOptions{}, ErrInvalid},
		{"long name", string(bytes.Repeat([]byte("a"), 129)), KeyOptions{}, ErrInvalid},
		{"negative period", "k", KeyOptions{AutoRotatePeriod: -time.Hour}, ErrInvalid},
		{"exists", "exists", KeyOptions{}, ErrKeyExists},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := k.CreateKey(ctx, tc.key, tc.o); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if !mapsEqual(before, n.store.dump()) {
		t.Fatal("a refused CreateKey changed storage")
	}
	if _, err := k.Key(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Key(nope): %v", err)
	}
}

func TestVersionsLifecycle(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "k", KeyOptions{})
	var cts [][]byte
	for v := 1; v <= 4; v++ {
		if v > 1 {
			n.clock.Advance(time.Hour)
			if ki, err := k.RotateKey(ctx, "k"); err != nil || ki.Latest != v {
				t.Fatalf("rotate to %d: %+v, %v", v, ki, err)
			}
		}
		ct, err := k.Encrypt(ctx, "k", []byte("msg"), CryptOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, _, _ := ParseCiphertext(ct); got != v {
			t.Fatalf("encrypted under version %d, want %d", got, v)
		}
		cts = append(cts, ct)
	}
	// Encrypt under a chosen version.
	ct, err := k.Encrypt(ctx, "k", []byte("msg"), CryptOptions{Version: 2})
	if v, _, _ := ParseCiphertext(ct); err != nil || v != 2 {
		t.Fatalf("encrypt with version 2: %d, %v", v, err)
	}
	// Minimum decryption version.
	if _, err := k.UpdateKey(ctx, "k", KeyUpdate{MinDecryptionVersion: ptr(3)}); err != nil {
		t.Fatal(err)
	}
	for i, ct := range cts {
		_, err := k.Decrypt(ctx, "k", ct, CryptOptions{})
		if below := i+1 < 3; below != errors.Is(err, ErrVersionUnavailable) || !below && err != nil {
			t.Fatalf("decrypt v%d with min 3: %v", i+1, err)
		}
	}
	if _, err := k.Encrypt(ctx, "k", nil, CryptOptions{Version: 2}); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("encrypt below min decryption: %v", err)
	}
	// Minimum encryption version.
	if _, err := k.UpdateKey(ctx, "k", KeyUpdate{MinEncryptionVersion: ptr(4)}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Encrypt(ctx, "k", nil, CryptOptions{Version: 3}); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("encrypt below min encryption: %v", err)
	}
	if _, err := k.Decrypt(ctx, "k", cts[2], CryptOptions{}); err != nil {
		t.Fatalf("decrypt v3 (min encryption 4): %v", err)
	}
	for _, u := range []KeyUpdate{
		{MinDecryptionVersion: ptr(0)},
		{MinDecryptionVersion: ptr(5)},
		{MinEncryptionVersion: ptr(2)}, // below min decryption 3
		{MinEncryptionVersion: ptr(5)},
		{AutoRotatePeriod: ptr(-time.Second)},
	} {
		if _, err := k.UpdateKey(ctx, "k", u); !errors.Is(err, ErrInvalid) {
			t.Errorf("UpdateKey(%+v): %v", u, err)
		}
	}
	k.UpdateKey(ctx, "k", KeyUpdate{MinDecryptionVersion: ptr(1), MinEncryptionVersion: ptr(0)})
	// Disable, enable, destroy.
	if _, err := k.SetVersionState(ctx, "k", 4, StateDisabled); !errors.Is(err, ErrForbidden) {
		t.Fatalf("disable latest: %v", err)
	}
	if _, err := k.SetVersionState(ctx, "k", 1, StateDisabled); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Decrypt(ctx, "k", cts[0], CryptOptions{}); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("decrypt disabled version: %v", err)
	}
	k.SetVersionState(ctx, "k", 1, StateActive)
	if _, err := k.Decrypt(ctx, "k", cts[0], CryptOptions{}); err != nil {
		t.Fatalf("decrypt re-enabled version: %v", err)
	}
	if _, err := k.SetVersionState(ctx, "k", 2, StateDestroyed); err != nil {
		t.Fatal(err)
	}
	if _, err := n.store.Get(ctx, tableKeyMat, materialKey("k", 2)); err == nil {
		t.Fatal("destroyed version still has material in storage")
	}
	if _, err := k.Decrypt(ctx, "k", cts[1], CryptOptions{}); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("decrypt destroyed version: %v", err)
	}
	if _, err := k.SetVersionState(ctx, "k", 2, StateActive); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("re-enable destroyed version: %v", err)
	}
	for _, tc := range []struct {
		v    int
		s    VersionState
		want error
	}{{9, StateDisabled, ErrNotFound}, {0, StateDisabled, ErrNotFound}, {1, "gone", ErrInvalid}} {
		if _, err := k.SetVersionState(ctx, "k", tc.v, tc.s); !errors.Is(err, tc.want) {
			t.Errorf("SetVersionState(%d, %s): %v", tc.v, tc.s, err)
		}
	}
	ki, _ := k.Key(ctx, "k")
	want := []VersionState{StateActive, StateDestroyed, StateActive, StateActive}
	for i, v := range ki.Versions {
		if v.State != want[i] || !v.Created.Equal(ki.Created.Add(time.Duration(i)*time.Hour)) {
			t.Errorf("version %d: %+v", i+1, v)
		}
	}
	// Destroying version 1 drops 1 and 2 from the metadata.
	if ki, err := k.SetVersionState(ctx, "k", 1, StateDestroyed); err != nil || len(ki.Versions) != 2 || ki.Versions[0].Version != 3 {
		t.Fatalf("after destroying 1: %+v, %v", ki.Versions, err)
	}
	for _, v := range []int{1, 2} {
		if _, err := k.SetVersionState(ctx, "k", v, StateDestroyed); err != nil {
			t.Errorf("destroying dropped version %d again: %v", v, err)
		}
		if _, err := k.SetVersionState(ctx, "k", v, StateActive); !errors.Is(err, ErrVersionUnavailable) {
			t.Errorf("enabling dropped version %d: %v", v, err)
		}
		if _, err := k.Decrypt(ctx, "k", cts[v-1], CryptOptions{}); !errors.Is(err, ErrVersionUnavailable) {
			t.Errorf("decrypt dropped version %d: %v", v, err)
		}
	}
	if pt, err := k.Decrypt(ctx, "k", cts[2], CryptOptions{}); err != nil || string(pt) != "msg" {
		t.Fatalf("decrypt v3 after trimming: %q, %v", pt, err)
	}
}

func TestMaxVersions(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "k", KeyOptions{})
	if _, err := k.updateMeta(ctx, "k", func(m *keyMeta) ([]raftstore.Op, error) {
		for v := 2; v <= MaxVersions; v++ {
			m.Versions = append(m.Versions, versionMeta{Version: v, State: StateDestroyed})
		}
		m.Versions[MaxVersions-1].State = StateActive
		m.Latest = MaxVersions
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RotateKey(ctx, "k"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("rotate past MaxVersions: %v", err)
	}
	if _, err := k.SetVersionState(ctx, "k", 1, StateDestroyed); err != nil {
		t.Fatal(err)
	}
	if ki, err := k.RotateKey(ctx, "k"); err != nil || len(ki.Versions) != 2 {
		t.Fatalf("rotate after destroying the oldest: %d versions, %v", len(ki.Versions), err)
	}
}

func TestExportable(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "locked", KeyOptions{Type: TypeEd25519})
	if _, err := k.Export(ctx, "locked", 0); !errors.Is(err, ErrNotExportable) {
		t.Fatalf("export of a non-exportable key: %v", err)
	}
	if _, err := k.UpdateKey(ctx, "locked", KeyUpdate{Exportable: ptr(true)}); !errors.Is(err, ErrNotExportable) {
		t.Fatalf("making a key exportable: %v", err)
	}
	k.CreateKey(ctx, "open", KeyOptions{Type: TypeAES256GCM96, Exportable: true})
	exp, err := k.Export(ctx, "open", 1)
	if err != nil || len(exp.Key) != 32 || exp.Version != 1 || exp.Type != TypeAES256GCM96 {
		t.Fatalf("Export = %+v, %v", exp.Version, err)
	}
	// The exported key decrypts what the KMS encrypted (Vault layout).
	ct, _ := k.Encrypt(ctx, "open", []byte("hello"), CryptOptions{AD: []byte("ad")})
	_, body, _ := ParseCiphertext(ct)
	g, _ := newGCM(exp.Key)
	if pt, err := g.Open(nil, body[:12], body[12:], []byte("ad")); err != nil || string(pt) != "hello" {
		t.Fatalf("exported key: %q, %v", pt, err)
	}
	if _, err := k.UpdateKey(ctx, "open", KeyUpdate{Exportable: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.UpdateKey(ctx, "open", KeyUpdate{Exportable: ptr(true)}); !errors.Is(err, ErrNotExportable) {
		t.Fatalf("re-enabling export: %v", err)
	}
	if _, err := k.Export(ctx, "open", 0); !errors.Is(err, ErrNotExportable) {
		t.Fatalf("export after turning it off: %v", err)
	}
}

func TestDeletionWindow(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "keep", KeyOptions{})
	if _, err := k.ScheduleDeletion(ctx, "keep", 0); !errors.Is(err, ErrDeletionNotAllowed) {
		t.Fatalf("deletion not allowed: %v", err)
	}
	k.CreateKey(ctx, "k", KeyOptions{DeletionAllowed: true, Type: TypeAES256GCM96})
	k.RotateKey(ctx, "k")
	ct, _ := k.Encrypt(ctx, "k", []byte("x"), CryptOptions{})
	if _, err := k.ScheduleDeletion(ctx, "k", time.Hour); !errors.Is(err, ErrInvalid) {
		t.Fatalf("window below the minimum: %v", err)
	}
	when, err := k.ScheduleDeletion(ctx, "k", 0)
	if err != nil || !when.Equal(n.clock.Now().Add(30*24*time.Hour)) {
		t.Fatalf("ScheduleDeletion = %v, %v", when, err)
	}
	if _, err := k.Decrypt(ctx, "k", ct, CryptOptions{}); !errors.Is(err, ErrPendingDeletion) {
		t.Fatalf("decrypt while pending deletion: %v", err)
	}
	if _, err := k.RotateKey(ctx, "k"); !errors.Is(err, ErrPendingDeletion) {
		t.Fatalf("rotate while pending deletion: %v", err)
	}
	if err := k.CancelDeletion(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Decrypt(ctx, "k", ct, CryptOptions{}); err != nil {
		t.Fatalf("decrypt after cancel: %v", err)
	}
	k.ScheduleDeletion(ctx, "k", 7*24*time.Hour)
	n.clock.Advance(7*24*time.Hour - time.Second)
	if err := k.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Key(ctx, "k"); err != nil {
		t.Fatalf("deleted before the date: %v", err)
	}
	n.clock.Advance(time.Second)
	if err := k.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Key(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Key after deletion: %v", err)
	}
	if _, err := k.Decrypt(ctx, "k", ct, CryptOptions{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("decrypt after deletion: %v", err)
	}
	for _, v := range []int{1, 2} {
		if _, err := n.store.Get(ctx, tableKeyMat, materialKey("k", v)); err == nil {
			t.Fatalf("material of version %d survived deletion", v)
		}
	}
	if _, err := k.Key(ctx, "keep"); err != nil {
		t.Fatalf("other key: %v", err)
	}
}

func TestAutoRotation(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "by-age", KeyOptions{AutoRotatePeriod: 24 * time.Hour})
	k.CreateKey(ctx, "by-use", KeyOptions{AutoRotateUses: 10})
	k.CreateKey(ctx, "never", KeyOptions{})
	for range 9 {
		k.Encrypt(ctx, "by-use", []byte("x"), CryptOptions{})
	}
	n.clock.Advance(23 * time.Hour)
	if err := k.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	latest := func(name string) int {
		ki, err := k.Key(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return ki.Latest
	}
	if latest("by-age") != 1 || latest("by-use") != 1 {
		t.Fatal("rotated too early")
	}
	k.Encrypt(ctx, "by-use", []byte("x"), CryptOptions{})
	n.clock.Advance(time.Hour)
	if err := k.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if latest("by-age") != 2 || latest("by-use") != 2 || latest("never") != 1 {
		t.Fatalf("after maintenance: by-age %d, by-use %d, never %d", latest("by-age"), latest("by-use"), latest("never"))
	}
	// Maintenance on two nodes at once rotates once.
	p := n.peer(t)
	n.clock.Advance(24 * time.Hour)
	errs := make(chan error, 2)
	for _, x := range []*KMS{k, p.k} {
		go func() { errs <- x.Maintain(ctx) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if latest("by-age") != 3 {
		t.Fatalf("two maintainers: latest = %d, want 3", latest("by-age"))
	}
}

func TestGCM96UseLimit(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "g", KeyOptions{Type: TypeAES256GCM96})
	// Pretend the cluster has used version 1 almost 2^32 times.
	if _, err := k.updateMeta(ctx, "g", func(m *keyMeta) ([]raftstore.Op, error) {
		m.Versions[0].Uses = gcm96UseLimit - 1
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	ct, err := k.Encrypt(ctx, "g", []byte("last"), CryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Encrypt(ctx, "g", []byte("one too many"), CryptOptions{}); !errors.Is(err, ErrUseLimit) {
		t.Fatalf("encrypt past 2^32: %v", err)
	}
	if _, err := k.Decrypt(ctx, "g", ct, CryptOptions{}); err != nil {
		t.Fatalf("decrypt at the limit: %v", err)
	}
	// Maintenance rotates it (2^31 is the automatic threshold).
	if err := k.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Encrypt(ctx, "g", []byte("fresh"), CryptOptions{}); err != nil {
		t.Fatalf("encrypt after auto-rotation: %v", err)
	}
}

// A key deleted and created again under its name is a new key, also on a
// node that still caches the old one.
func TestRecreatedKeyIsNew(t *testing.T) {
	a := newNode(t)
	b := a.peer(t)
	ctx := bg
	a.k.CreateKey(ctx, "k", KeyOptions{DeletionAllowed: true})
	old, _ := a.k.Encrypt(ctx, "k", []byte("old"), CryptOptions{})
	if _, err := b.k.ScheduleDeletion(ctx, "k", 0); err != nil {
		t.Fatal(err)
	}
	a.clock.Advance(31 * 24 * time.Hour)
	if err := b.k.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.k.CreateKey(ctx, "k", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	ct, err := a.k.Encrypt(ctx, "k", []byte("new"), CryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := b.k.Decrypt(ctx, "k", ct, CryptOptions{}); err != nil || string(pt) != "new" {
		t.Fatalf("new key's ciphertext on the other node: %q, %v", pt, err)
	}
	if _, err := a.k.Decrypt(ctx, "k", old, CryptOptions{}); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("old key's ciphertext: %v", err)
	}
	a.k.FlushUsage(ctx)
	if v := mustInfo(t, b.k, "k").Versions[0]; v.Uses != 1 {
		t.Fatalf("the old key's counts leaked into the new key: %+v", v)
	}
}
