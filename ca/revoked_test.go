package ca

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/testutil/testca"
)

// Revoked answers for certificates this CA issued, refuses one its issuer
// signed that it never recorded, and leaves others alone.
func TestRevokedForCertificateLogin(t *testing.T) {
	c, _ := newTestCA(t)
	good, bad := issue(t, c, "good.example.com"), issue(t, c, "bad.example.com")
	_, err := c.Revoke(bg, bad.Serial, 1)
	must(t, err)

	external := testca.New(t, "external CA").NodeCert(t, "web-1")
	extLeaf, err := x509.ParseCertificate(external.Certificate[0])
	must(t, err)

	// Signed by the intermediate's key in the KMS, but never recorded.
	set, err := c.issuers(bg)
	must(t, err)
	signer, err := c.kms.Signer(bg, set.active.key, set.active.keyVersion)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(424242), Subject: pkix.Name{CommonName: "ghost.example.com"},
		NotBefore: c.now().Add(-time.Minute), NotAfter: c.now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, set.active.cert, p256(t).Public(), signer)
	must(t, err)
	ghost, err := x509.ParseCertificate(der)
	must(t, err)

	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want bool
	}{
		{"issued here", good.Certificate, false},
		{"revoked here", bad.Certificate, true},
		{"another CA's", extLeaf, false},
		{"signed here, never recorded", ghost, true},
	} {
		got, err := c.Revoked(bg, tc.cert)
		if err != nil || got != tc.want {
			t.Errorf("%s: Revoked = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if _, err := c.Revoked(bg, nil); !isInvalid(err) {
		t.Fatalf("nil certificate: %v", err)
	}
}

func isInvalid(err error) bool { return errors.Is(err, ErrInvalid) }
