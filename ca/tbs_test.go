package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// testIssuer is an in-memory CA certificate and its key.
func testIssuer(t *testing.T, key crypto.Signer) *x509.Certificate {
	t.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "tbs test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, SubjectKeyId: []byte{1, 2, 3, 4},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return cert
}

func leafTemplate(serial int64) *x509.Certificate {
	now := time.Now().Truncate(time.Second)
	return &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "a.example.com"}, NotBefore: now, NotAfter: now.Add(time.Hour),
		DNSNames: []string{"a.example.com"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, SubjectKeyId: []byte{5, 6, 7, 8},
	}
}

// buildTBS gives the TBSCertificate that x509.CreateCertificate signs, and
// signing it gives the certificate crypto/x509 would have made, for every
// issuer key type and signature scheme.
func TestBuildTBS(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	for name, tc := range map[string]struct {
		key    crypto.Signer
		sigAlg x509.SignatureAlgorithm
	}{
		"ecdsa-p256":     {p256(t), 0},
		"ecdsa-p384":     {must2(ecdsa.GenerateKey(elliptic.P384(), rand.Reader)), 0},
		"rsa-pkcs1v15":   {rsaKey, 0},
		"rsa-pss-sha256": {rsaKey, x509.SHA256WithRSAPSS},
	} {
		t.Run(name, func(t *testing.T) {
			issuer := testIssuer(t, tc.key)
			leaf := p256(t)
			tmpl := leafTemplate(42)
			tmpl.SignatureAlgorithm = tc.sigAlg
			want, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, leaf.Public(), tc.key)
			must(t, err)
			wantCert, err := x509.ParseCertificate(want)
			must(t, err)
			tbs, err := buildTBS(tmpl, issuer, leaf.Public())
			must(t, err)
			if !bytes.Equal(tbs.der, wantCert.RawTBSCertificate) {
				t.Fatal("the kept TBSCertificate is not the one crypto/x509 signs")
			}
			cert, err := tbs.sign(tc.key)
			must(t, err)
			must(t, cert.CheckSignatureFrom(issuer))
			if cert.SignatureAlgorithm != wantCert.SignatureAlgorithm || !bytes.Equal(cert.RawTBSCertificate, wantCert.RawTBSCertificate) {
				t.Fatalf("signed %v, crypto/x509 %v", cert.SignatureAlgorithm, wantCert.SignatureAlgorithm)
			}
			// The lint copy parses, with the same TBSCertificate.
			der, err := tbs.lintCertificate()
			must(t, err)
			lc, err := x509.ParseCertificate(der)
			must(t, err)
			if !bytes.Equal(lc.RawTBSCertificate, tbs.der) || lc.CheckSignatureFrom(issuer) == nil {
				t.Fatal("the lint copy differs or carries a signature that verifies")
			}
		})
	}
}

func must2[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A TBSCertificate is signed only by the issuer's key, and a template that
// crypto/x509 refuses is ErrInvalid.
func TestBuildTBSRefuses(t *testing.T) {
	key := p256(t)
	issuer := testIssuer(t, key)
	tbs, err := buildTBS(leafTemplate(1), issuer, p256(t).Public())
	must(t, err)
	if _, err := tbs.sign(p256(t)); err == nil || !strings.Contains(err.Error(), "not the issuer's") {
		t.Fatalf("signed with another key: %v", err)
	}
	bad := leafTemplate(1)
	bad.SerialNumber = big.NewInt(-1)
	if _, err := buildTBS(bad, issuer, p256(t).Public()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative serial: %v", err)
	}
	if _, err := buildTBS(leafTemplate(1), issuer, struct{}{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unsupported key: %v", err)
	}
}

// The lints find the same in a certificate with the placeholder signature
// as in one signed by a throwaway key of the issuer's type (Boulder's lint
// issuer, which custos used before): none of them reads the signature.
func TestLintSignatureUnread(t *testing.T) {
	c, _ := newTestCA(t)
	set, err := c.issuers(bg)
	must(t, err)
	iss := set.active
	for _, name := range c.lints.Names() {
		// The lints that read a signature value, left out on purpose.
		if name == "e_mp_ecdsa_signature_encoding_correct" || name == "e_cert_issued_by_compromised_emudhra_ca" {
			t.Errorf("lint %s reads the signature value", name)
		}
	}
	throwaway := p256(t)
	standIn := *iss.cert
	standIn.PublicKey = throwaway.Public()
	standInDER, err := x509.CreateCertificate(rand.Reader, &standIn, &standIn, throwaway.Public(), throwaway)
	must(t, err)
	standInCert, err := x509.ParseCertificate(standInDER)
	must(t, err)

	wildcard, uri, good := leafTemplate(1), leafTemplate(2), leafTemplate(3)
	wildcard.DNSNames = []string{"a.*.example.com"}
	u, _ := url.Parse("spiffe://prod/web")
	uri.DNSNames, uri.Subject, uri.URIs = nil, pkix.Name{}, []*url.URL{u}
	noKU := leafTemplate(4)
	noKU.KeyUsage, noKU.ExtKeyUsage, noKU.Subject.CommonName = 0, nil, strings.Repeat("x", 70)
	for name, tmpl := range map[string]*x509.Certificate{"good": good, "wildcard": wildcard, "uri": uri, "long CN": noKU} {
		pub := p256(t).Public()
		tbs, err := buildTBS(tmpl, iss.cert, pub)
		must(t, err)
		der, err := tbs.lintCertificate()
		must(t, err)
		placeholder, err := x509.ParseCertificate(der)
		must(t, err)
		signedDER, err := x509.CreateCertificate(rand.Reader, tmpl, standInCert, pub, throwaway)
		must(t, err)
		signed, err := x509.ParseCertificate(signedDER)
		must(t, err)
		if !bytes.Equal(signed.RawTBSCertificate, tbs.der) {
			t.Fatalf("%s: the lint issuer's TBSCertificate differs", name)
		}
		got, err := c.LintFindings(placeholder)
		must(t, err)
		want, err := c.LintFindings(signed)
		must(t, err)
		if !slices.Equal(got.Errors, want.Errors) || !slices.Equal(got.Warnings, want.Warnings) {
			t.Errorf("%s: placeholder %+v, lint issuer %+v", name, got, want)
		}
		if name != "good" && len(got.Errors) == 0 {
			t.Errorf("%s: no lint error", name)
		}
		if name == "good" && (len(got.Errors) > 0 || len(got.Warnings) > 0) {
			t.Errorf("good: %+v", got)
		}
	}
}

// signUses is how many signatures the active intermediate's key has made.
func signUses(t *testing.T, c *CA, s *stack) uint64 {
	t.Helper()
	set, err := c.issuers(bg)
	must(t, err)
	info, err := s.kms.Key(bg, set.active.key)
	must(t, err)
	for _, v := range info.Versions {
		if v.Version == set.active.keyVersion {
			return v.Uses
		}
	}
	t.Fatalf("no version %d", set.active.keyVersion)
	return 0
}

// A certificate costs the issuer's key exactly one signature, the
// certificate returned is byte for byte the one recorded, and a request
// that fails a lint is never signed.
func TestSignOnceRecordExact(t *testing.T) {
	c, s := newTestCA(t)
	before := signUses(t, c, s)
	got, err := c.Sign(bg, "web", csrFor(t, p256(t), "www.example.com", nil, nil), SignOptions{})
	must(t, err)
	if n := signUses(t, c, s) - before; n != 1 {
		t.Fatalf("%d signatures for one certificate", n)
	}
	must(t, got.Certificate.CheckSignatureFrom(got.Chain[0]))
	rec, err := c.Get(bg, got.Serial)
	must(t, err)
	if !bytes.Equal(rec.Certificate.Raw, got.Certificate.Raw) {
		t.Fatal("the recorded certificate is not the one returned")
	}
	if err := c.Lint(got.Certificate); err != nil {
		t.Fatalf("the issued certificate fails lints: %v", err)
	}

	_, err = c.WriteRole(bg, Role{Name: "spiffe", AllowedURISANs: []string{"spiffe://prod/*"}})
	must(t, err)
	before, count := signUses(t, c, s), countCerts(t, c)
	_, err = c.Sign(bg, "spiffe", csrFor(t, p256(t), "", nil, nil, "spiffe://prod/web"), SignOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "e_ext_san_uri_host_not_fqdn_or_ip") {
		t.Fatalf("Sign = %v, want a lint error", err)
	}
	if signUses(t, c, s) != before || countCerts(t, c) != count {
		t.Fatal("a certificate that failed lints was signed or recorded")
	}
}
