package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

func issue(t testing.TB, c *CA, name string) *Issued {
	t.Helper()
	got, err := c.Issue(bg, "web", IssueRequest{CommonName: name})
	must(t, err)
	return got
}

// parseCRL parses a CRL, checks its signature and returns it.
func parseCRL(t testing.TB, der []byte, issuer *x509.Certificate) *x509.RevocationList {
	t.Helper()
	crl, err := x509.ParseRevocationList(der)
	must(t, err)
	must(t, crl.CheckSignatureFrom(issuer))
	return crl
}

func crlHas(crl *x509.RevocationList, serial *big.Int) (x509.RevocationListEntry, bool) {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return e, true
		}
	}
	return x509.RevocationListEntry{}, false
}

func TestRevokeAndCRL(t *testing.T) {
	c, s := newTestCA(t)
	a, b, keep := issue(t, c, "a.example.com"), issue(t, c, "b.example.com"), issue(t, c, "keep.example.com")
	inter := a.Chain[0]
	crl0 := parseCRL(t, mustCRL(t, c), inter)
	if len(crl0.RevokedCertificateEntries) != 0 || crl0.Number.Sign() <= 0 || !crl0.NextUpdate.After(crl0.ThisUpdate) {
		t.Fatalf("first CRL: number %v, %d entries", crl0.Number, len(crl0.RevokedCertificateEntries))
	}

	rev, err := c.Revoke(bg, strings.ToUpper(a.Serial), 1)
	must(t, err)
	if rev.Status != StatusRevoked || rev.RevocationReason != 1 || rev.RevokedAt.IsZero() {
		t.Fatalf("revoked: %+v", rev)
	}
	crl1 := parseCRL(t, mustCRL(t, c), inter)
	if e, ok := crlHas(crl1, a.Certificate.SerialNumber); !ok || e.ReasonCode != 1 {
		t.Fatalf("revoked serial not in the next CRL (entry %+v)", e)
	}
	if crl1.Number.Cmp(crl0.Number) <= 0 {
		t.Fatalf("CRL number %v after %v", crl1.Number, crl0.Number)
	}
	if _, err := c.Revoke(bg, a.Serial, 1); !errors.Is(err, ErrAlreadyRevoked) || !errors.Is(err, ErrConflict) {
		t.Fatalf("second revoke = %v", err)
	}
	for _, bad := range []int{7, 8, 11, -1} {
		if _, err := c.Revoke(bg, b.Serial, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("reason %d = %v", bad, err)
		}
	}
	if _, err := c.Revoke(bg, "00ff", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown serial = %v", err)
	}

	// Revoked on a follower: stored, not in the CRL until the leader acts.
	s.leader.Store(false)
	follower := s.newCA(t, s.newCAArgs())
	_, err = follower.Revoke(bg, b.Serial, 4)
	must(t, err)
	stale := parseCRL(t, mustCRL(t, follower), inter)
	if _, ok := crlHas(stale, b.Certificate.SerialNumber); ok || stale.Number.Cmp(crl1.Number) != 0 {
		t.Fatal("a follower made a CRL")
	}
	must(t, follower.Maintain(bg))
	s.leader.Store(true)
	must(t, c.Maintain(bg))
	crl2 := parseCRL(t, mustCRL(t, follower), inter)
	if _, ok := crlHas(crl2, b.Certificate.SerialNumber); !ok || crl2.Number.Cmp(crl1.Number) <= 0 {
		t.Fatalf("after Maintain on the leader: number %v, entries %d", crl2.Number, len(crl2.RevokedCertificateEntries))
	}
	if _, ok := crlHas(crl2, keep.Certificate.SerialNumber); ok {
		t.Fatal("an unrevoked serial is in the CRL")
	}
	// Nothing due: Maintain leaves the CRL alone. Past half its validity:
	// a new CRL with a higher number.
	must(t, c.Maintain(bg))
	if same := parseCRL(t, mustCRL(t, c), inter); same.Number.Cmp(crl2.Number) != 0 {
		t.Fatalf("CRL remade when not due: %v", same.Number)
	}
	s.clock.Add(13 * time.Hour)
	must(t, c.Maintain(bg))
	crl3 := parseCRL(t, mustCRL(t, c), inter)
	if crl3.Number.Cmp(crl2.Number) <= 0 || !crl3.ThisUpdate.After(crl2.ThisUpdate) {
		t.Fatalf("CRL not remade at half its validity: %v", crl3.Number)
	}
	// Expired certificates leave the CRL.
	s.clock.Add(25 * time.Hour)
	must(t, c.Maintain(bg))
	if crl4 := parseCRL(t, mustCRL(t, c), inter); len(crl4.RevokedCertificateEntries) != 0 {
		t.Fatalf("expired serials still listed: %d", len(crl4.RevokedCertificateEntries))
	}

	// openssl reads the CRL and lists the serial.
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "crl.der"), crl2.Raw, 0o600))
	out := openssl(t, dir, "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text")
	for _, want := range []string{strings.ToUpper(a.Serial), strings.ToUpper(b.Serial), "Key Compromise", "Superseded", "X509v3 CRL Number"} {
		if !strings.Contains(out, want) {
			t.Fatalf("openssl crl output lacks %q:\n%s", want, out)
		}
	}
}

func mustCRL(t testing.TB, c *CA) []byte {
	t.Helper()
	der, err := c.CRL(bg)
	must(t, err)
	return der
}

// Concurrent revocations from many goroutines each reach a CRL, and every
// CRL number is new.
func TestCRLNumberUnderConcurrency(t *testing.T) {
	c, s := newTestCA(t)
	other := s.newCA(t, s.newCAArgs()) // a second node that also thinks it leads
	var certs []*Issued
	for i := range 8 {
		certs = append(certs, issue(t, c, fmt.Sprintf("c%d.example.com", i)))
	}
	errs := make(chan error, len(certs))
	for i, is := range certs {
		ca := c
		if i%2 == 1 {
			ca = other
		}
		go func() { _, err := ca.Revoke(bg, is.Serial, 0); errs <- err }()
	}
	for range certs {
		must(t, <-errs)
	}
	must(t, c.Maintain(bg))
	crl := parseCRL(t, mustCRL(t, c), certs[0].Chain[0])
	if len(crl.RevokedCertificateEntries) != len(certs) {
		t.Fatalf("CRL lists %d of %d revocations", len(crl.RevokedCertificateEntries), len(certs))
	}
	if crl.Number.Int64() < 2 {
		t.Fatalf("CRL number %v", crl.Number)
	}
}

func TestOCSP(t *testing.T) {
	c, _ := newTestCA(t)
	good, revoked := issue(t, c, "good.example.com"), issue(t, c, "revoked.example.com")
	inter := good.Chain[0]
	_, err := c.Revoke(bg, revoked.Serial, 1)
	must(t, err)
	ask := func(cert *x509.Certificate, h crypto.Hash) *ocsp.Response {
		t.Helper()
		req, err := ocsp.CreateRequest(cert, inter, &ocsp.RequestOptions{Hash: h})
		must(t, err)
		der, err := c.OCSP(bg, req)
		must(t, err)
		resp, err := ocsp.ParseResponseForCert(der, cert, inter)
		must(t, err)
		return resp
	}
	if r := ask(good.Certificate, crypto.SHA1); r.Status != ocsp.Good || !r.NextUpdate.After(r.ThisUpdate) {
		t.Fatalf("good: status %d", r.Status)
	}
	if r := ask(revoked.Certificate, crypto.SHA256); r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise {
		t.Fatalf("revoked: status %d reason %d", r.Status, r.RevocationReason)
	}
	unknown := *good.Certificate
	unknown.SerialNumber = big.NewInt(12345)
	if r := ask(&unknown, crypto.SHA1); r.Status != ocsp.Unknown {
		t.Fatalf("unknown: status %d", r.Status)
	}
	if der, err := c.OCSP(bg, []byte("garbage")); err != nil || !bytes.Equal(der, ocsp.MalformedRequestErrorResponse) {
		t.Fatalf("garbage: %x, %v", der, err)
	}
	// A request about another CA's certificate.
	other, _ := newTestCA(t)
	o := issue(t, other, "x.example.com")
	req, err := ocsp.CreateRequest(o.Certificate, o.Chain[0], nil)
	must(t, err)
	if der, err := c.OCSP(bg, req); err != nil || !bytes.Equal(der, ocsp.UnauthorizedErrorResponse) {
		t.Fatalf("foreign issuer: %x, %v", der, err)
	}
}
