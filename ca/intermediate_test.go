package ca

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

func TestRotateIntermediate(t *testing.T) {
	c, s := newTestCA(t)
	old := issue(t, c, "old.example.com")
	chain, err := c.RotateIntermediate(bg)
	must(t, err)
	if chain[0].Equal(old.Chain[0]) || !chain[1].Equal(old.Chain[1]) || chain[0].Subject.CommonName != "custos CA Intermediate 2" {
		t.Fatalf("rotated chain: %v", chain)
	}
	fresh := issue(t, c, "new.example.com")
	if !fresh.Chain[0].Equal(chain[0]) {
		t.Fatal("issued by the retired intermediate")
	}
	verifyChain(t, fresh.Certificate, fresh.Chain, s.clock.Now())
	verifyChain(t, old.Certificate, old.Chain, s.clock.Now()) // the old chain still verifies
	if rec, _ := c.Get(bg, fresh.Serial); rec.Issuer != "int-2" {
		t.Fatalf("issuer of the new certificate: %q", rec.Issuer)
	}
	list, err := c.Issuers(bg)
	must(t, err)
	if len(list) != 2 || !list[0].Active || list[0].ID != "int-2" || list[1].ID != "int-1" {
		t.Fatalf("Issuers: %+v", list)
	}
	// The retired intermediate answers OCSP and keeps its own CRL.
	_, err = c.Revoke(bg, old.Serial, 0)
	must(t, err)
	req, err := ocsp.CreateRequest(old.Certificate, old.Chain[0], nil)
	must(t, err)
	der, err := c.OCSP(bg, req)
	must(t, err)
	if r, err := ocsp.ParseResponseForCert(der, old.Certificate, old.Chain[0]); err != nil || r.Status != ocsp.Revoked {
		t.Fatalf("OCSP via the retired intermediate: %v %v", r, err)
	}
	oldCRL, err := c.IssuerCRL(bg, "int-1")
	must(t, err)
	if _, ok := crlHas(parseCRL(t, oldCRL, old.Chain[0]), old.Certificate.SerialNumber); !ok {
		t.Fatal("the retired intermediate's CRL lacks its revoked certificate")
	}
	if _, ok := crlHas(parseCRL(t, mustCRL(t, c), chain[0]), old.Certificate.SerialNumber); ok {
		t.Fatal("the new intermediate's CRL lists another issuer's certificate")
	}
	if _, err := c.IssuerCRL(bg, "int-9"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown issuer CRL = %v", err)
	}
	// Once the retired intermediate has expired, Maintain forgets it.
	s.clock.Add(old.Chain[0].NotAfter.Sub(s.clock.Now()) + time.Hour)
	must(t, c.Maintain(bg))
	if list, _ := c.Issuers(bg); len(list) != 1 {
		t.Fatalf("expired retired intermediate kept: %d issuers", len(list))
	}
}

// newExternalRoot is a root outside custos and a function that signs
// intermediate CSRs with it.
func newExternalRoot(t *testing.T) (*x509.Certificate, func(csrPEM []byte, ttl time.Duration) []byte) {
	key := p256(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Offline Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(20 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	must(t, err)
	root, err := x509.ParseCertificate(der)
	must(t, err)
	return root, func(csrPEM []byte, ttl time.Duration) []byte {
		block, _ := pem.Decode(csrPEM)
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		must(t, err)
		must(t, csr.CheckSignature())
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(ttl),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, root, csr.PublicKey, key)
		must(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
}

func TestExternalRoot(t *testing.T) {
	s := newStack(t)
	c := s.newCA(t, s.newCAArgs())
	root, sign := newExternalRoot(t)
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
	if err := c.SetIntermediate(bg, sign(csrFor(t, p256(t), "x", nil, nil), 365*24*time.Hour)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetIntermediate with nothing pending = %v", err)
	}
	csr1, err := c.IntermediateCSR(bg)
	must(t, err)
	csr2, err := c.IntermediateCSR(bg)
	must(t, err)
	if pubOf(t, csr1) != pubOf(t, csr2) {
		t.Fatal("a second IntermediateCSR made another key")
	}
	// A certificate for another key, one that is not a CA, a chain without
	// its root, and one that expires too soon are refused.
	if err := c.SetIntermediate(bg, append(sign(csrFor(t, p256(t), "x", nil, nil), 365*24*time.Hour), rootPEM...)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("certificate for another key = %v", err)
	}
	if err := c.SetIntermediate(bg, sign(csr1, 365*24*time.Hour)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("chain without a root = %v", err)
	}
	if err := c.SetIntermediate(bg, append(sign(csr1, 24*time.Hour), rootPEM...)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("intermediate that expires within MaxTTL = %v", err)
	}
	if _, _, err := c.Issuer(bg); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("refused certificates installed something: %v", err)
	}
	must(t, c.SetIntermediate(bg, append(sign(csr1, 365*24*time.Hour), rootPEM...)))
	_, chain, err := c.Issuer(bg)
	must(t, err)
	if len(chain) != 2 || !chain[1].Equal(root) {
		t.Fatalf("chain: %v", chain)
	}
	_, err = c.WriteRole(bg, webRole())
	must(t, err)
	got := issue(t, c, "svc.example.com")
	verifyChain(t, got.Certificate, got.Chain, s.clock.Now())
	opensslVerify(t, got.Certificate, got.Chain)
	if _, err := c.RotateIntermediate(bg); !errors.Is(err, ErrExternalRoot) {
		t.Fatalf("RotateIntermediate with an external root = %v", err)
	}
	if _, err := c.Init(bg, InitOptions{}); !errors.Is(err, ErrAlreadyInitialized) {
		t.Fatalf("Init after SetIntermediate = %v", err)
	}
	// The next intermediate comes the same way, and the old one is retired.
	csr3, err := c.IntermediateCSR(bg)
	must(t, err)
	if pubOf(t, csr3) == pubOf(t, csr1) {
		t.Fatal("the next CSR reuses the installed key")
	}
	must(t, c.SetIntermediate(bg, sign(csr3, 365*24*time.Hour))) // root known: may be left out
	list, err := c.Issuers(bg)
	must(t, err)
	if len(list) != 2 || list[0].ID != "int-2" {
		t.Fatalf("Issuers: %+v", list)
	}
}

func pubOf(t *testing.T, csrPEM []byte) string {
	block, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	must(t, err)
	must(t, csr.CheckSignature())
	der, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	must(t, err)
	return string(der)
}
