package ca

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/binary"
	"fmt"
	"reflect"
	"sync"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"
)

// zlint's community lint e_ecdsa_small_private_key refuses an ECDSA key
// whose private scalar d, or its negation, is at most 2^16: anyone can find
// such a d. It searches by baby-step giant-step over a table of 4,096
// points, which costs 32 point additions, each with a field inversion, per
// certificate: about 0.1 to 0.2 ms, a tenth of what a REST certificate
// costs the whole cluster. For P-256, the curve of nearly every key custos
// certifies, smallKeyLint answers the same question with one lookup in a
// table of all 65,536 small multiples of the base point, built once per
// process when a CA starts (about 0.4 s, 1.5 MB). Other curves go to
// zlint's own implementation. The lint keeps zlint's name, metadata and
// place in the list; only its implementation is swapped, and only while
// zlint's lint searches 16 bits.

const (
	smallKeyLintName = "e_ecdsa_small_private_key"
	smallKeyBits     = 16
)

// withFastSmallKeyLint returns lints with zlint's small-key lint replaced
// by smallKeyLint, or lints unchanged if zlint's lint is absent, cannot
// run without zlint's framework (see lintRunner), or no longer searches
// smallKeyBits bits under cfg.
func withFastSmallKeyLint(lints []*lint.CertificateLint, cfg lint.Configuration) []*lint.CertificateLint {
	for i, l := range lints {
		if l.Name != smallKeyLintName {
			continue
		}
		zl := newLintRunner(l, cfg)
		if !zl.fast() || zlintSmallKeyBits(zl.instance()) != smallKeyBits {
			return lints
		}
		fast := *l
		impl := &smallKeyLint{zlint: zl}
		fast.Lint = func() lint.CertificateLintInterface { return impl }
		out := append([]*lint.CertificateLint(nil), lints...)
		out[i] = &fast
		return out
	}
	return lints
}

// zlintSmallKeyBits is the Bits setting of zlint's configured small-key
// lint impl, or -1 if it cannot be read.
func zlintSmallKeyBits(impl lint.CertificateLintInterface) int {
	v := reflect.ValueOf(impl)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return -1
	}
	f := v.Elem().FieldByName("Bits")
	if !f.IsValid() || f.Kind() != reflect.Int {
		return -1
	}
	return int(f.Int())
}

// smallKeyLint is e_ecdsa_small_private_key with a full table for P-256.
// One instance serves every certificate: it changes nothing in itself, and
// each use of zlint's lint gets its own configured instance.
type smallKeyLint struct {
	zlint lintRunner // zlint's lint: whether it applies, and the other curves
}

var _ sharedLint = (*smallKeyLint)(nil)

func (l *smallKeyLint) sharedByDesign() {}

func (l *smallKeyLint) CheckApplies(c *zx509.Certificate) bool {
	return l.zlint.instance().CheckApplies(c)
}

func (l *smallKeyLint) Execute(c *zx509.Certificate) *lint.LintResult {
	key := ecdsaKeyOf(c)
	if key == nil || key.Curve != elliptic.P256() {
		return l.zlint.instance().Execute(c)
	}
	d := smallP256Scalar(key)
	if d == 0 {
		return &lint.LintResult{Status: lint.Pass}
	}
	return &lint.LintResult{
		Status:  lint.Error,
		Details: fmt.Sprintf("the ECDSA private key is %d, or its negation modulo the group order, and so can be trivially recovered by anyone", d),
	}
}

// ecdsaKeyOf is the certificate's ECDSA public key, as zlint finds it.
func ecdsaKeyOf(c *zx509.Certificate) *ecdsa.PublicKey {
	if c.PublicKeyAlgorithm != zx509.ECDSA {
		return nil
	}
	switch k := c.PublicKey.(type) {
	case *zx509.AugmentedECDSA:
		return k.Pub
	case *ecdsa.PublicKey:
		return k
	}
	return nil
}

// p256SmallMultiples maps the low 64 bits of the X coordinate of d*G to d,
// for 1 <= d <= 2^16. The X of -d*G is the same, so a lookup finds both.
var p256SmallMultiples = sync.OnceValue(func() map[uint64]uint32 {
	curve := elliptic.P256()
	p := curve.Params()
	t := make(map[uint64]uint32, 1<<smallKeyBits)
	x, y := p.Gx, p.Gy
	for d := uint32(1); d <= 1<<smallKeyBits; d++ {
		t[x.Uint64()] = d
		// The one API of the standard library that adds points, and the
		// one zlint's lint uses; over public constants, 3x faster than a
		// scalar multiplication per entry.
		x, y = curve.Add(x, y, p.Gx, p.Gy) //lint:ignore SA1019 see above
	}
	return t
})

// smallP256Scalar returns d if key is d*G or -d*G with 1 <= d <= 2^16, else
// 0. A table hit shares only 64 bits of X, so it is checked in full.
func smallP256Scalar(key *ecdsa.PublicKey) uint32 {
	pub, err := key.Bytes() // 04 || X || Y
	if err != nil || len(pub) != 65 {
		return 0
	}
	x := pub[1:33]
	d, ok := p256SmallMultiples()[binary.BigEndian.Uint64(x[24:])]
	if !ok {
		return 0
	}
	var scalar [32]byte
	binary.BigEndian.PutUint32(scalar[28:], d)
	k, err := ecdh.P256().NewPrivateKey(scalar[:])
	if err != nil || !bytes.Equal(k.PublicKey().Bytes()[1:33], x) {
		return 0
	}
	return d
}
