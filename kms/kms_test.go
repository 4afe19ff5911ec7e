package kms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"
)

func TestCategory(t *testing.T) {
	for err, want := range map[error]error{
		ErrNotInitialized: ErrSealed, ErrAlreadyInitialized: ErrConflict, ErrBadUnsealKey: ErrForbidden,
		ErrKeyFilePermissions: ErrInvalid, ErrReservedTable: ErrInvalid, ErrDecrypt: ErrInvalid,
		ErrMalformed: ErrInvalid, ErrUnsupported: ErrInvalid, ErrKeyExists: ErrConflict,
		ErrVersionUnavailable: ErrForbidden, ErrNotExportable: ErrForbidden, ErrDeletionNotAllowed: ErrForbidden,
		ErrPendingDeletion: ErrForbidden, ErrUseLimit: ErrForbidden, ErrCorrupt: nil, errors.New("x"): nil,
		ErrInvalid: ErrInvalid, ErrNotFound: ErrNotFound, ErrSealed: ErrSealed,
	} {
		if got := Category(err); got != want {
			t.Errorf("Category(%v) = %v, want %v", err, got, want)
		}
	}
}

// The encrypt path does not touch storage once the key is cached, and use
// counts reach storage only through FlushUsage.
func TestUsageCountedInMemory(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "k", KeyOptions{})
	ct, _ := k.Encrypt(ctx, "k", []byte("warm"), CryptOptions{})
	k.Decrypt(ctx, "k", ct, CryptOptions{})
	calls := n.store.calls.Load()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 25 {
				if _, err := k.Encrypt(ctx, "k", []byte("x"), CryptOptions{}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for range 10 {
		k.Decrypt(ctx, "k", ct, CryptOptions{})
	}
	if got := n.store.calls.Load() - calls; got != 0 {
		t.Fatalf("110 operations made %d storage calls", got)
	}
	ki := mustInfo(t, k, "k")
	if v := ki.Versions[0]; v.Uses != 101 || v.Decryptions != 11 {
		t.Fatalf("counts before flush: %+v", v)
	}
	p := n.peer(t)
	if v := mustInfo(t, p.k, "k").Versions[0]; v.Uses != 0 {
		t.Fatalf("peer saw unflushed counts: %+v", v)
	}
	if err := k.FlushUsage(ctx); err != nil {
		t.Fatal(err)
	}
	if v := mustInfo(t, p.k, "k").Versions[0]; v.Uses != 101 || v.Decryptions != 11 {
		t.Fatalf("peer after flush: %+v", v)
	}
	// Both nodes count; the stored count is the sum.
	p.k.Encrypt(ctx, "k", []byte("x"), CryptOptions{})
	k.Encrypt(ctx, "k", []byte("x"), CryptOptions{})
	p.k.FlushUsage(ctx)
	k.FlushUsage(ctx)
	if v := mustInfo(t, k, "k").Versions[0]; v.Uses != 103 {
		t.Fatalf("after two flushes: %+v", v)
	}
	// Nothing to flush: no writes.
	calls = n.store.calls.Load()
	k.FlushUsage(ctx)
	if got := n.store.calls.Load() - calls; got != 0 {
		t.Fatalf("empty flush made %d storage calls", got)
	}
}

// Another node's changes reach this node's cache within CacheTTL, at once
// with Invalidate, and a ciphertext under a version newer than the cached
// latest triggers a reload.
func TestChangesFromAnotherNode(t *testing.T) {
	a := newNode(t)
	b := a.peer(t)
	ctx := bg
	a.k.CreateKey(ctx, "k", KeyOptions{})
	v1, _ := a.k.Encrypt(ctx, "k", []byte("one"), CryptOptions{})
	b.k.RotateKey(ctx, "k")
	v2, _ := b.k.Encrypt(ctx, "k", []byte("two"), CryptOptions{})
	if pt, err := a.k.Decrypt(ctx, "k", v2, CryptOptions{}); err != nil || string(pt) != "two" {
		t.Fatalf("decrypt of a newer version: %q, %v", pt, err)
	}
	b.k.UpdateKey(ctx, "k", KeyUpdate{MinDecryptionVersion: ptr(2)})
	if _, err := a.k.Decrypt(ctx, "k", v1, CryptOptions{}); err != nil {
		t.Fatalf("within the TTL the cached minimum applies: %v", err)
	}
	a.clock.Advance(DefaultConfig().CacheTTL)
	if _, err := a.k.Decrypt(ctx, "k", v1, CryptOptions{}); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("after the TTL: %v", err)
	}
	b.k.UpdateKey(ctx, "k", KeyUpdate{MinDecryptionVersion: ptr(1)})
	a.k.Invalidate("k")
	if _, err := a.k.Decrypt(ctx, "k", v1, CryptOptions{}); err != nil {
		t.Fatalf("after Invalidate: %v", err)
	}
	b.k.SetVersionState(ctx, "k", 1, StateDestroyed)
	a.k.Invalidate("")
	if _, err := a.k.Decrypt(ctx, "k", v1, CryptOptions{}); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("destroyed on another node: %v", err)
	}
}

func TestSealDropsKeys(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	k.CreateKey(ctx, "k", KeyOptions{})
	k.CreateKey(ctx, "h", KeyOptions{Type: TypeHMAC})
	ct, _ := k.Encrypt(ctx, "k", []byte("x"), CryptOptions{})
	k.HMAC(ctx, "h", []byte("x"), SignOptions{})
	hk := k.cache["h"].vers[1].hmacKey
	n.b.Seal()
	if !allZero(hk) {
		t.Fatal("seal left an HMAC key in memory")
	}
	if cached := len(k.cache); cached != 0 {
		t.Fatalf("%d keys cached after seal", cached)
	}
	for i, err := range []error{
		errOf(k.Encrypt(ctx, "k", []byte("x"), CryptOptions{})),
		errOf(k.Decrypt(ctx, "k", ct, CryptOptions{})),
		errOf(k.Key(ctx, "k")),
		errOf(k.CreateKey(ctx, "new", KeyOptions{})),
		errOf(k.Signer(ctx, "k", 0)),
		k.FlushUsage(ctx),
	} {
		if !errors.Is(err, ErrSealed) {
			t.Errorf("op %d while sealed: %v", i, err)
		}
	}
	n.unseal(t)
	if pt, err := k.Decrypt(ctx, "k", ct, CryptOptions{}); err != nil || string(pt) != "x" {
		t.Fatalf("after unseal: %q, %v", pt, err)
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return len(b) > 0
}

func errOf[T any](_ T, err error) error { return err }

// A sign key serves as the crypto.Signer of a certificate authority.
func TestSigner(t *testing.T) {
	n := newNode(t)
	k, ctx := n.k, bg
	for _, tc := range []struct {
		typ  KeyType
		algo x509.SignatureAlgorithm
	}{
		{TypeECDSAP256, x509.ECDSAWithSHA256},
		{TypeECDSAP384, x509.ECDSAWithSHA384},
		{TypeEd25519, x509.PureEd25519},
		{TypeRSA2048, x509.SHA256WithRSA},
		{TypeRSA2048, x509.SHA384WithRSAPSS},
	} {
		t.Run(tc.algo.String(), func(t *testing.T) {
			name := "ca-" + tc.algo.String()
			if _, err := k.CreateKey(ctx, name, KeyOptions{Type: tc.typ}); err != nil {
				t.Fatal(err)
			}
			s, err := k.Signer(ctx, name, 0)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "custos test root"},
				NotBefore: n.clock.Now(), NotAfter: n.clock.Now().Add(time.Hour),
				IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
				SignatureAlgorithm: tc.algo,
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := cert.CheckSignatureFrom(cert); err != nil {
				t.Fatal(err)
			}
			// The signer stays on its version after a rotation.
			k.RotateKey(ctx, name)
			digest := sha256.Sum256([]byte("after rotation"))
			var opts crypto.SignerOpts = crypto.SHA256
			msg := digest[:]
			if tc.typ == TypeEd25519 {
				opts, msg = crypto.Hash(0), []byte("after rotation")
			}
			sig, err := s.Sign(nil, msg, opts)
			if err != nil {
				t.Fatal(err)
			}
			if !verifySig(s.Public(), opts.HashFunc(), msg, sig, PaddingPKCS1v15) {
				t.Fatal("signature after rotation does not verify with the signer's public key")
			}
		})
	}
	k.CreateKey(ctx, "ecdsa", KeyOptions{Type: TypeECDSAP256})
	s, _ := k.Signer(ctx, "ecdsa", 0)
	if _, err := s.Sign(nil, []byte("message"), crypto.Hash(0)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ECDSA signer without a hash: %v", err)
	}
	if _, ok := s.Public().(*ecdsa.PublicKey); !ok {
		t.Fatalf("Public() = %T", s.Public())
	}
	// PSS through the signer.
	k.CreateKey(ctx, "rsa", KeyOptions{Type: TypeRSA2048})
	rs, _ := k.Signer(ctx, "rsa", 1)
	d := sha256.Sum256([]byte("pss"))
	sig, err := rs.Sign(nil, d[:], &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil || rsa.VerifyPSS(rs.Public().(*rsa.PublicKey), crypto.SHA256, d[:], sig, nil) != nil {
		t.Fatalf("PSS through the signer: %v", err)
	}
	if _, err := k.Signer(ctx, "rsa", 5); !errors.Is(err, ErrVersionUnavailable) {
		t.Fatalf("signer for a missing version: %v", err)
	}
	n.b.Seal()
	if _, err := s.Sign(nil, d[:], crypto.SHA256); !errors.Is(err, ErrSealed) {
		t.Fatalf("signer while sealed: %v", err)
	}
}
