package kms

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"strings"
	"testing"
)

func TestEncryptDecrypt(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	big := bytes.Repeat([]byte("x"), 1<<16)
	for _, typ := range []KeyType{TypeAES256GCM96, TypeAES256GCM96HKDF} {
		t.Run(string(typ), func(t *testing.T) {
			name := "enc-" + string(typ)
			k.CreateKey(ctx, name, KeyOptions{Type: typ})
			for _, tc := range []struct {
				name   string
				pt, ad []byte
			}{{"empty", nil, nil}, {"with ad", []byte("secret"), []byte("tenant=7")}, {"64KiB", big, nil}} {
				ct, err := k.Encrypt(ctx, name, tc.pt, CryptOptions{AD: tc.ad})
				if err != nil {
					t.Fatal(err)
				}
				if len(tc.pt) > 0 && bytes.Contains(ct, tc.pt) {
					t.Fatal("ciphertext holds the plaintext")
				}
				text, err := FormatCiphertext(ct)
				if err != nil || !strings.HasPrefix(text, "custos:v1:") {
					t.Fatalf("FormatCiphertext = %.20q, %v", text, err)
				}
				for _, form := range [][]byte{ct, []byte(text)} {
					pt, err := k.Decrypt(ctx, name, form, CryptOptions{AD: tc.ad})
					if err != nil || !bytes.Equal(pt, tc.pt) || pt == nil {
						t.Fatalf("%s: Decrypt = %.20q, %v", tc.name, pt, err)
					}
				}
			}
			// Rewrap moves a ciphertext to the latest version.
			ct, _ := k.Encrypt(ctx, name, []byte("rewrap me"), CryptOptions{AD: []byte("ad")})
			k.RotateKey(ctx, name)
			if _, err := k.Rewrap(ctx, name, ct, CryptOptions{}); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("rewrap without the AD: %v", err)
			}
			re, err := k.Rewrap(ctx, name, ct, CryptOptions{AD: []byte("ad")})
			if v, _, _ := ParseCiphertext(re); err != nil || v != 2 {
				t.Fatalf("Rewrap = v%d, %v", v, err)
			}
			if pt, err := k.Decrypt(ctx, name, re, CryptOptions{AD: []byte("ad")}); err != nil || string(pt) != "rewrap me" {
				t.Fatalf("Decrypt(rewrapped) = %q, %v", pt, err)
			}
			// Data keys, with and without the plaintext.
			for _, bits := range []int{0, 128, 256, 512} {
				dk, err := k.GenerateDataKey(ctx, name, bits, true, CryptOptions{})
				want := max(bits, 256) / 8
				if bits == 128 {
					want = 16
				}
				if err != nil || len(dk.Plaintext) != want {
					t.Fatalf("GenerateDataKey(%d) = %d bytes, %v", bits, len(dk.Plaintext), err)
				}
				if pt, err := k.Decrypt(ctx, name, dk.Ciphertext, CryptOptions{}); err != nil || !bytes.Equal(pt, dk.Plaintext) {
					t.Fatalf("data key does not decrypt: %v", err)
				}
			}
			if dk, err := k.GenerateDataKey(ctx, name, 256, false, CryptOptions{}); err != nil || dk.Plaintext != nil || dk.Ciphertext == nil {
				t.Fatalf("wrapped-only data key: %v", err)
			}
			if _, err := k.GenerateDataKey(ctx, name, 192, true, CryptOptions{}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("192-bit data key: %v", err)
			}
		})
	}
}

// Bad input gets a clear error and changes nothing: neither storage nor the
// key's metadata, and the good ciphertext still decrypts afterwards.
func TestBadInputChangesNothing(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "k", KeyOptions{Type: TypeAES256GCM96HKDF})
	k.CreateKey(ctx, "other", KeyOptions{Type: TypeAES256GCM96HKDF})
	k.CreateKey(ctx, "gcm", KeyOptions{Type: TypeAES256GCM96})
	k.CreateKey(ctx, "sig", KeyOptions{Type: TypeECDSAP256})
	k.CreateKey(ctx, "mac", KeyOptions{Type: TypeHMAC})
	ad := []byte("ad")
	old, _ := k.Encrypt(ctx, "k", []byte("v1"), CryptOptions{AD: ad})
	k.RotateKey(ctx, "k")
	k.RotateKey(ctx, "k")
	good, _ := k.Encrypt(ctx, "k", []byte("secret"), CryptOptions{AD: ad})
	destroyed, _ := k.Encrypt(ctx, "k", []byte("v2"), CryptOptions{AD: ad, Version: 2})
	gcmCT, _ := k.Encrypt(ctx, "gcm", []byte("secret"), CryptOptions{})
	k.UpdateKey(ctx, "k", KeyUpdate{MinDecryptionVersion: ptr(2)})
	k.SetVersionState(ctx, "k", 2, StateDestroyed)
	sig, _ := k.Sign(ctx, "sig", []byte("m"), SignOptions{})
	text, _ := FormatCiphertext(good)
	flip := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 1; return b }
	_, body, _ := ParseCiphertext(good)
	v9 := append(appendHeader(nil, 9), body...)

	before, infoBefore := n.store.dump(), mustInfo(t, k, "k")
	for _, tc := range []struct {
		name string
		run  func() error
		want error
	}{
		{"wrong key", dec(k, "other", old, ad), ErrDecrypt},
		{"wrong type of key", dec(k, "gcm", old, ad), ErrDecrypt},
		{"gcm ciphertext under hkdf key", dec(k, "k", append(appendHeader(nil, 3), gcmCT[2:]...), nil), ErrDecrypt},
		{"wrong ad", dec(k, "k", good, []byte("da")), ErrDecrypt},
		{"missing ad", dec(k, "k", good, nil), ErrDecrypt},
		{"tampered body", dec(k, "k", flip(good, len(good)-20), ad), ErrDecrypt},
		{"tampered tag", dec(k, "k", flip(good, len(good)-1), ad), ErrDecrypt},
		{"tampered salt", dec(k, "k", flip(good, 3), ad), ErrDecrypt},
		{"tampered magic", dec(k, "k", flip(good, 0), ad), ErrMalformed},
		{"truncated", dec(k, "k", good[:len(good)-1], ad), ErrDecrypt},
		{"truncated to header", dec(k, "k", good[:3], ad), ErrDecrypt},
		{"empty", dec(k, "k", nil, ad), ErrMalformed},
		{"tampered text", dec(k, "k", []byte(strings.Replace(text, "custos:v3:", "custos:v3:A", 1)), ad), ErrMalformed},
		{"text version changed", dec(k, "k", []byte(strings.Replace(text, ":v3:", ":v1:", 1)), ad), ErrVersionUnavailable},
		{"below min version", dec(k, "k", old, ad), ErrVersionUnavailable},
		{"destroyed version", dec(k, "k", destroyed, ad), ErrVersionUnavailable},
		{"unknown version", dec(k, "k", v9, ad), ErrVersionUnavailable},
		{"unknown key", dec(k, "nope", good, ad), ErrNotFound},
		{"bad key name", dec(k, "../k", good, ad), ErrInvalid},
		{"encrypt with destroyed version", func() error {
			_, err := k.Encrypt(ctx, "k", []byte("x"), CryptOptions{Version: 2})
			return err
		}, ErrVersionUnavailable},
		{"rewrap below min", func() error { _, err := k.Rewrap(ctx, "k", old, CryptOptions{AD: ad}); return err }, ErrVersionUnavailable},
		{"sign with encryption key", func() error { _, err := k.Sign(ctx, "k", []byte("m"), SignOptions{}); return err }, ErrUnsupported},
		{"hmac with encryption key", func() error { _, err := k.HMAC(ctx, "k", []byte("m"), SignOptions{}); return err }, ErrUnsupported},
		{"encrypt with sign key", func() error { _, err := k.Encrypt(ctx, "sig", []byte("m"), CryptOptions{}); return err }, ErrUnsupported},
		{"data key with hmac key", func() error {
			_, err := k.GenerateDataKey(ctx, "mac", 256, true, CryptOptions{})
			return err
		}, ErrUnsupported},
		{"verify with hmac key", func() error { _, err := k.Verify(ctx, "mac", []byte("m"), sig, SignOptions{}); return err }, ErrUnsupported},
		{"unknown type", func() error { _, err := k.CreateKey(ctx, "new", KeyOptions{Type: "des"}); return err }, ErrInvalid},
		{"malformed signature", func() error { _, err := k.Verify(ctx, "sig", []byte("m"), []byte("nope"), SignOptions{}); return err }, ErrMalformed},
		{"bad hash", func() error { _, err := k.Sign(ctx, "sig", []byte("m"), SignOptions{Hash: crypto.MD5}); return err }, ErrInvalid},
		{"short digest", func() error {
			_, err := k.Sign(ctx, "sig", []byte("m"), SignOptions{Prehashed: true})
			return err
		}, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if Category(err) == nil {
				t.Fatalf("error %v has no category", err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error message holds the plaintext: %v", err)
			}
		})
	}
	if !mapsEqual(before, n.store.dump()) {
		t.Fatal("bad input changed storage")
	}
	if got := mustInfo(t, k, "k"); !infoEqual(got, infoBefore) {
		t.Fatalf("bad input changed the key: %+v", got)
	}
	if pt, err := k.Decrypt(ctx, "k", good, CryptOptions{AD: ad}); err != nil || string(pt) != "secret" {
		t.Fatalf("good ciphertext after bad input: %q, %v", pt, err)
	}
}

func dec(k *KMS, name string, ct, ad []byte) func() error {
	return func() error {
		pt, err := k.Decrypt(bg, name, ct, CryptOptions{AD: ad})
		if err == nil {
			return errors.New("decrypted: " + string(pt))
		}
		return err
	}
}

func mustInfo(t *testing.T, k *KMS, name string) KeyInfo {
	t.Helper()
	ki, err := k.Key(bg, name)
	if err != nil {
		t.Fatal(err)
	}
	return ki
}

func infoEqual(a, b KeyInfo) bool {
	if len(a.Versions) != len(b.Versions) {
		return false
	}
	for i := range a.Versions {
		if a.Versions[i] != b.Versions[i] {
			return false
		}
	}
	a.Versions, b.Versions = nil, nil
	return a.Name == b.Name && a.Latest == b.Latest && a.MinDecryptionVersion == b.MinDecryptionVersion &&
		a.MinEncryptionVersion == b.MinEncryptionVersion && a.Exportable == b.Exportable && a.DeletionDate.Equal(b.DeletionDate)
}

func TestSignVerify(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	msg := []byte("to be signed")
	d256, d384, d512 := sha256.Sum256(msg), sha512.Sum384(msg), sha512.Sum512(msg)
	digests := map[crypto.Hash][]byte{crypto.SHA256: d256[:], crypto.SHA384: d384[:], crypto.SHA512: d512[:]}
	for _, typ := range []KeyType{TypeECDSAP256, TypeECDSAP384, TypeEd25519, TypeRSA2048} {
		t.Run(string(typ), func(t *testing.T) {
			name := "sign-" + string(typ)
			k.CreateKey(ctx, name, KeyOptions{Type: typ})
			k.CreateKey(ctx, name+"-2", KeyOptions{Type: typ})
			var opts []SignOptions
			if typ == TypeEd25519 {
				opts = []SignOptions{{}, {Hash: crypto.SHA512}, {Hash: crypto.SHA512, Prehashed: true}}
			} else {
				for _, h := range []crypto.Hash{0, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
					opts = append(opts, SignOptions{Hash: h}, SignOptions{Hash: h, Padding: PaddingPKCS1v15})
					if h != 0 {
						opts = append(opts, SignOptions{Hash: h, Prehashed: true})
					}
				}
			}
			for _, o := range opts {
				in := msg
				if o.Prehashed {
					in = digests[o.Hash]
				}
				sig, err := k.Sign(ctx, name, in, o)
				if err != nil {
					t.Fatalf("Sign(%+v): %v", o, err)
				}
				if ok, err := k.Verify(ctx, name, in, sig, o); !ok || err != nil {
					t.Fatalf("Verify(%+v) = %v, %v", o, ok, err)
				}
				text, _ := FormatCiphertext(sig)
				if ok, _ := k.Verify(ctx, name, in, []byte(text), o); !ok {
					t.Fatalf("Verify(text form, %+v) failed", o)
				}
				if ok, _ := k.Verify(ctx, name, append([]byte("x"), msg...), sig, SignOptions{Hash: o.Hash, Padding: o.Padding}); ok {
					t.Fatalf("Verify(other message, %+v) passed", o)
				}
				if ok, _ := k.Verify(ctx, name+"-2", in, sig, o); ok {
					t.Fatalf("Verify(other key, %+v) passed", o)
				}
			}
			if typ == TypeEd25519 {
				if _, err := k.Sign(ctx, name, msg, SignOptions{Hash: crypto.SHA256}); !errors.Is(err, ErrInvalid) {
					t.Fatalf("ed25519 with SHA-256: %v", err)
				}
			}
		})
	}
	// RSA: a PSS signature does not pass as PKCS #1 v1.5.
	sig, _ := k.Sign(ctx, "sign-rsa-2048", msg, SignOptions{})
	if ok, _ := k.Verify(ctx, "sign-rsa-2048", msg, sig, SignOptions{Padding: PaddingPKCS1v15}); ok {
		t.Fatal("PSS signature verified as PKCS #1 v1.5")
	}
}

func TestHMAC(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "mac", KeyOptions{Type: TypeHMAC})
	k.CreateKey(ctx, "mac2", KeyOptions{Type: TypeHMAC})
	for _, h := range []crypto.Hash{0, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		mac, err := k.HMAC(ctx, "mac", []byte("data"), SignOptions{Hash: h})
		if err != nil {
			t.Fatal(err)
		}
		if _, raw, _ := ParseCiphertext(mac); len(raw) != max(h, crypto.SHA256).Size() {
			t.Fatalf("HMAC-%v is %d bytes", h, len(raw))
		}
		if ok, err := k.VerifyHMAC(ctx, "mac", []byte("data"), mac, SignOptions{Hash: h}); !ok || err != nil {
			t.Fatalf("VerifyHMAC = %v, %v", ok, err)
		}
		for _, bad := range []struct {
			name, msg string
		}{{"mac", "date"}, {"mac2", "data"}} {
			if ok, _ := k.VerifyHMAC(ctx, bad.name, []byte(bad.msg), mac, SignOptions{Hash: h}); ok {
				t.Fatalf("VerifyHMAC(%s, %s) passed", bad.name, bad.msg)
			}
		}
	}
	if _, err := k.HMAC(ctx, "mac", []byte("data"), SignOptions{Prehashed: true}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("prehashed HMAC: %v", err)
	}
}

func TestBatch(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "b", KeyOptions{})
	k.CreateKey(ctx, "s", KeyOptions{Type: TypeEd25519})
	res, err := k.Batch(ctx, "b", BatchEncrypt, []BatchItem{
		{Input: []byte("one")},
		{Input: []byte("two"), Crypt: CryptOptions{AD: []byte("ad")}},
		{Input: []byte("three"), Crypt: CryptOptions{Version: 7}}, // fails alone
	})
	if err != nil || len(res) != 3 || res[0].Err != nil || res[1].Err != nil || !errors.Is(res[2].Err, ErrVersionUnavailable) {
		t.Fatalf("BatchEncrypt = %+v, %v", res, err)
	}
	dres, _ := k.Batch(ctx, "b", BatchDecrypt, []BatchItem{
		{Input: res[0].Output},
		{Input: res[1].Output}, // AD missing: fails alone
		{Input: []byte("garbage")},
		{Input: res[1].Output, Crypt: CryptOptions{AD: []byte("ad")}},
	})
	if string(dres[0].Output) != "one" || !errors.Is(dres[1].Err, ErrDecrypt) || !errors.Is(dres[2].Err, ErrMalformed) || string(dres[3].Output) != "two" {
		t.Fatalf("BatchDecrypt = %+v", dres)
	}
	rres, _ := k.Batch(ctx, "b", BatchRewrap, []BatchItem{{Input: res[0].Output}})
	if rres[0].Err != nil {
		t.Fatalf("BatchRewrap: %v", rres[0].Err)
	}
	sres, _ := k.Batch(ctx, "s", BatchSign, []BatchItem{{Input: []byte("m1")}, {Input: []byte("m2")}})
	vres, _ := k.Batch(ctx, "s", BatchVerify, []BatchItem{
		{Input: []byte("m1"), Signature: sres[0].Output},
		{Input: []byte("m1"), Signature: sres[1].Output},
		{Input: []byte("m2"), Signature: []byte("bad")},
	})
	if !vres[0].Valid || vres[1].Valid || vres[1].Err != nil || !errors.Is(vres[2].Err, ErrMalformed) {
		t.Fatalf("BatchVerify = %+v", vres)
	}
	k.CreateKey(ctx, "h", KeyOptions{Type: TypeHMAC})
	hres, _ := k.Batch(ctx, "h", BatchHMAC, []BatchItem{{Input: []byte("x")}})
	hv, _ := k.Batch(ctx, "h", BatchVerifyHMAC, []BatchItem{{Input: []byte("x"), Signature: hres[0].Output}, {Input: []byte("y"), Signature: hres[0].Output}})
	if !hv[0].Valid || hv[1].Valid {
		t.Fatalf("BatchVerifyHMAC = %+v", hv)
	}
	if _, err := k.Batch(ctx, "b", BatchOp(0), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown op: %v", err)
	}
	if _, err := k.Batch(ctx, "b", BatchEncrypt, make([]BatchItem, 1001)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized batch: %v", err)
	}
	// A missing key fails every item, each with its own error.
	mres, err := k.Batch(ctx, "missing", BatchEncrypt, []BatchItem{{}, {}})
	if err != nil || !errors.Is(mres[0].Err, ErrNotFound) || !errors.Is(mres[1].Err, ErrNotFound) {
		t.Fatalf("batch on a missing key: %+v, %v", mres, err)
	}
}

func TestRandom(t *testing.T) {
	n := newNode(t)
	a, err := n.k.Random(32)
	b, _ := n.k.Random(32)
	if err != nil || len(a) != 32 || bytes.Equal(a, b) {
		t.Fatalf("Random = %x, %v", a, err)
	}
	for _, bad := range []int{0, -1, MaxRandomBytes + 1} {
		if _, err := n.k.Random(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Random(%d): %v", bad, err)
		}
	}
	n.b.Seal()
	if _, err := n.k.Random(8); err != nil {
		t.Fatalf("Random while sealed: %v", err)
	}
}
