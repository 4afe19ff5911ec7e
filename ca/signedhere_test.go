package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"testing"
	"time"
)

// TestRecordSignedHere: a certificate SignTemplate returned is recorded
// without its signature being checked again, and only that pointer: a
// certificate forged with its serial and its issuer's name, or a copy of
// it, is checked as before.
func TestRecordSignedHere(t *testing.T) {
	c, signer, chain, key, tmpl := stepLeaf(t, "signed-here-0001", "here.example.com")
	now := tmpl.NotBefore
	cert, err := c.SignTemplate(bg, tmpl, chain[0], signer)
	must(t, err)
	if iss := c.signed.m[cert]; iss == "" {
		t.Fatal("SignTemplate did not remember the certificate it signed")
	}

	// Same serial, same issuer name, another key: refused.
	fakeKey := p256(t)
	fakeParent := &x509.Certificate{SerialNumber: big.NewInt(7), RawSubject: chain[0].RawSubject, NotBefore: now, NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	forgedTmpl := *tmpl
	forgedTmpl.PublicKey = nil
	der, err := x509.CreateCertificate(rand.Reader, &forgedTmpl, fakeParent, key.Public(), fakeKey)
	must(t, err)
	forged, err := x509.ParseCertificate(der)
	must(t, err)
	if string(forged.RawIssuer) != string(chain[0].RawSubject) || forged.SerialNumber.Cmp(cert.SerialNumber) != 0 {
		t.Fatal("the forged certificate does not imitate the signed one")
	}
	if err := c.Record(bg, forged, "acme", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a forged certificate with a serial signed here: %v", err)
	}

	must(t, c.Record(bg, cert, "acme", ""))
	if len(c.signed.m) != 0 {
		t.Fatalf("recording left %d certificates remembered", len(c.signed.m))
	}
	got, err := c.Get(bg, serialString(cert.SerialNumber))
	must(t, err)
	if got.Issuer != "int-1" || string(got.Certificate.Raw) != string(cert.Raw) {
		t.Fatalf("recorded %+v", got)
	}
	// A copy is checked, and is the same certificate: a no-op.
	copyOf, err := x509.ParseCertificate(cert.Raw)
	must(t, err)
	must(t, c.Record(bg, copyOf, "acme", ""))

	// The memory is bounded.
	for i := 0; i < maxSignedHere+10; i++ {
		c.signed.remember(&x509.Certificate{}, chain[0], mustIssuers(t, c))
	}
	if n := len(c.signed.m); n > maxSignedHere {
		t.Fatalf("%d certificates remembered", n)
	}
}

// stepLeaf is a test CA with its issuer's signer and chain, and what the
// step-ca embedding has it sign: a complete template of a server
// certificate for name, with this serial, for a new P-256 key.
func stepLeaf(t *testing.T, serial, name string) (*CA, crypto.Signer, []*x509.Certificate, *ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	c, s := newTestCA(t)
	signer, chain, err := c.Issuer(bg)
	must(t, err)
	key := p256(t)
	now := s.clock.Now()
	return c, signer, chain, key, &x509.Certificate{
		SerialNumber: big.NewInt(0).SetBytes([]byte(serial)), NotBefore: now, NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{name}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature, PublicKey: key.Public(),
	}
}

func mustIssuers(t *testing.T, c *CA) *issuers {
	t.Helper()
	set, err := c.issuers(bg)
	must(t, err)
	return set
}
