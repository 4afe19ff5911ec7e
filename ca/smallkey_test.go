package ca

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"
)

// certFor is a certificate for the public key d*G on curve, or -d*G.
func certFor(t testing.TB, curve elliptic.Curve, d *big.Int, negate bool) *zx509.Certificate {
	t.Helper()
	n := curve.Params().N
	scalar := new(big.Int).Set(d)
	if negate {
		scalar.Sub(n, d)
	}
	ec := map[elliptic.Curve]ecdh.Curve{elliptic.P256(): ecdh.P256(), elliptic.P384(): ecdh.P384()}[curve]
	k, err := ec.NewPrivateKey(scalar.FillBytes(make([]byte, (n.BitLen()+7)/8)))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, k.PublicKey().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return certForKey(t, pub)
}

func certForKey(t testing.TB, pub *ecdsa.PublicKey) *zx509.Certificate {
	t.Helper()
	issuer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "small"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, issuer)
	if err != nil {
		t.Fatal(err)
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return zc
}

// The CA's small-key lint gives zlint's verdict: an error for a private
// scalar, or its negation, of at most 2^16, and a pass above; on P-256 from
// its table, on other curves from zlint.
func TestFastSmallKeyLintAgreesWithZlint(t *testing.T) {
	reg, err := lintRegistry()
	if err != nil {
		t.Fatal(err)
	}
	orig := reg.CertificateLints().ByName(smallKeyLintName)
	if orig == nil {
		t.Fatalf("zlint has no %s", smallKeyLintName)
	}
	var fast *lint.CertificateLint
	for _, l := range withFastSmallKeyLint(reg.CertificateLints().Lints(), reg.GetConfiguration()) {
		if l.Name == smallKeyLintName {
			fast = l
		}
	}
	if _, ok := fast.Lint().(*smallKeyLint); !ok {
		t.Fatalf("the CA's %s is %T, not the table lookup: has zlint's lint changed?", smallKeyLintName, fast.Lint())
	}
	cfg := reg.GetConfiguration()
	random, err := rand.Int(rand.Reader, elliptic.P256().Params().N)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		curve elliptic.Curve
		d     *big.Int
		small bool
	}{
		{elliptic.P256(), big.NewInt(1), true},
		{elliptic.P256(), big.NewInt(2), true},
		{elliptic.P256(), big.NewInt(4097), true},
		{elliptic.P256(), big.NewInt(65535), true},
		{elliptic.P256(), big.NewInt(65536), true},
		{elliptic.P256(), big.NewInt(65537), false},
		{elliptic.P256(), big.NewInt(1 << 20), false},
		{elliptic.P256(), random, false},
		{elliptic.P384(), big.NewInt(3), true},
		{elliptic.P384(), big.NewInt(65537), false},
	} {
		for _, negate := range []bool{false, true} {
			c := certFor(t, tc.curve, tc.d, negate)
			want := lint.Pass
			if tc.small {
				want = lint.Error
			}
			z, f := orig.Execute(c, cfg), fast.Execute(c, cfg)
			if z.Status != want || f.Status != want || z.Details != f.Details {
				t.Errorf("%s d=%v negated=%v: zlint %v %q, the CA's lint %v %q; want %v",
					tc.curve.Params().Name, tc.d, negate, z.Status, z.Details, f.Status, f.Details, want)
			}
		}
	}
	if n := len(p256SmallMultiples()); n != 1<<smallKeyBits {
		t.Fatalf("the P-256 table holds %d multiples; want %d (two share 64 bits of X?)", n, 1<<smallKeyBits)
	}
}

// A CA refuses to issue for a key with a small private scalar.
func TestCARefusesASmallPrivateKey(t *testing.T) {
	c, _ := newTestCA(t)
	err := c.lintErrors(certFor(t, elliptic.P256(), big.NewInt(31337), true))
	if err == nil || !strings.Contains(err.Error(), smallKeyLintName+" (the ECDSA private key is 31337") {
		t.Fatalf("a certificate for -31337*G: %v; want %s to refuse it", err, smallKeyLintName)
	}
}

func BenchmarkSmallKeyLint(b *testing.B) {
	reg, err := lintRegistry()
	if err != nil {
		b.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	c := certForKey(b, &key.PublicKey)
	p256SmallMultiples()
	for _, impl := range []struct {
		name string
		l    *lint.CertificateLint
	}{
		{"zlint", reg.CertificateLints().ByName(smallKeyLintName)},
		{"table", withFastSmallKeyLint([]*lint.CertificateLint{reg.CertificateLints().ByName(smallKeyLintName)}, reg.GetConfiguration())[0]},
	} {
		b.Run(impl.name, func(b *testing.B) {
			for b.Loop() {
				if r := impl.l.Execute(c, reg.GetConfiguration()); r.Status != lint.Pass {
					b.Fatalf("%v %s", r.Status, r.Details)
				}
			}
		})
	}
}
