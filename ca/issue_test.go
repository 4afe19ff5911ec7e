package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/kms"
)

func TestInit(t *testing.T) {
	s := newStack(t)
	c := s.newCA(t, s.newCAArgs())
	if _, _, err := c.Issuer(bg); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Issuer before Init = %v", err)
	}
	chain, err := c.Init(bg, InitOptions{CommonName: "Acme Internal"})
	must(t, err)
	if len(chain) != 2 || chain[0].Subject.CommonName != "Acme Internal Intermediate 1" || chain[1].Subject.CommonName != "Acme Internal Root" {
		t.Fatalf("chain: %v", chain)
	}
	root, inter := chain[1], chain[0]
	if !inter.IsCA || !inter.MaxPathLenZero || inter.KeyUsage&x509.KeyUsageCRLSign == 0 || inter.NotAfter.After(root.NotAfter) {
		t.Fatalf("intermediate: IsCA %t, MaxPathLenZero %t, KeyUsage %v", inter.IsCA, inter.MaxPathLenZero, inter.KeyUsage)
	}
	verifyChain(t, inter, chain[1:], s.clock.Now())
	for name, cert := range map[string]*x509.Certificate{rootKeyName: root, intKeyName(1): inter} {
		info, err := s.kms.Key(bg, name)
		must(t, err)
		if info.Exportable || info.Type != kms.TypeECDSAP256 {
			t.Fatalf("key %s: %+v", name, info)
		}
		if _, err := s.kms.Export(bg, name, 0); !errors.Is(err, kms.ErrNotExportable) {
			t.Fatalf("export %s = %v", name, err)
		}
		pub, err := s.kms.PublicKey(bg, name, 0)
		must(t, err)
		if !samePublicKey(cert.PublicKey, pub) {
			t.Fatalf("certificate of %s is not for its key", name)
		}
	}
	signer, got, err := c.Issuer(bg)
	must(t, err)
	if !samePublicKey(signer.Public(), inter.PublicKey) || !got[0].Equal(inter) || !got[1].Equal(root) {
		t.Fatal("Issuer does not return the intermediate's signer and chain")
	}
	roots, err := c.Roots(bg)
	must(t, err)
	if len(roots) != 1 || !roots[0].Equal(root) {
		t.Fatalf("Roots: %v", roots)
	}
	if err := c.Lint(inter); err != nil {
		t.Fatalf("intermediate fails lints: %v", err)
	}
	if _, err := c.Init(bg, InitOptions{}); !errors.Is(err, ErrAlreadyInitialized) || !errors.Is(err, kms.ErrConflict) {
		t.Fatalf("second Init = %v", err)
	}
	// Another node sees the same CA.
	other := s.newCA(t, s.newCAArgs())
	_, chain2, err := other.Issuer(bg)
	must(t, err)
	if !chain2[0].Equal(inter) {
		t.Fatal("a second CA over the same storage sees another intermediate")
	}
	if _, err := s.newCA(t, s.newCAArgs()).Init(bg, InitOptions{KeyType: "ed25519"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ed25519 issuer = %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	s := newStack(t)
	for name, mod := range map[string]func(*Config){
		"no storage":             func(c *Config) { c.Storage = nil },
		"no kms":                 func(c *Config) { c.KMS = nil },
		"no leader func":         func(c *Config) { c.IsLeader = nil },
		"no clock":               func(c *Config) { c.Clock = nil },
		"bad key type":           func(c *Config) { c.KeyType = "dsa" },
		"max over intermediate":  func(c *Config) { c.MaxTTL = c.IntermediateTTL },
		"intermediate over root": func(c *Config) { c.IntermediateTTL = c.RootTTL + 1 },
		"default over max":       func(c *Config) { c.DefaultTTL = c.MaxTTL + 1 },
		"relative URL base":      func(c *Config) { c.URLBase = "/v1" },
		"short CRL validity":     func(c *Config) { c.CRLValidity = time.Second },
	} {
		cfg := s.newCAArgs()
		mod(&cfg)
		if _, err := New(bg, cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: New = %v, want ErrInvalid", name, err)
		}
	}
}

func TestSign(t *testing.T) {
	c, s := newTestCA(t)
	key := p256(t)
	csr := csrFor(t, key, "www.example.com", []string{"api.example.com", "API.example.com"}, []net.IP{net.ParseIP("10.1.2.3")}, "spiffe://example.org/ns/prod/sa/web")
	got, err := c.Sign(bg, "web", csr, SignOptions{TTL: time.Hour})
	must(t, err)
	cert := got.Certificate
	if !slices.Equal(cert.DNSNames, []string{"api.example.com", "www.example.com"}) || cert.Subject.CommonName != "www.example.com" ||
		len(cert.IPAddresses) != 1 || len(cert.URIs) != 1 {
		t.Fatalf("names: CN %q, DNS %v, IPs %v, URIs %v", cert.Subject.CommonName, cert.DNSNames, cert.IPAddresses, cert.URIs)
	}
	if d := cert.NotAfter.Sub(s.clock.Now()); d > time.Hour || d < time.Hour-2*time.Second {
		t.Fatalf("lifetime: NotAfter %v is %v from now", cert.NotAfter, d)
	}
	if cert.SerialNumber.BitLen() < 100 || cert.IsCA || cert.KeyUsage != x509.KeyUsageDigitalSignature ||
		!slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("serial %x, usages %v %v", cert.SerialNumber, cert.KeyUsage, cert.ExtKeyUsage)
	}
	if !samePublicKey(cert.PublicKey, key.Public()) {
		t.Fatal("certificate is not for the CSR's key")
	}
	verifyChain(t, cert, got.Chain, s.clock.Now())
	rec, err := c.Get(bg, got.Serial)
	must(t, err)
	if rec.Source != "rest" || rec.Role != "web" || rec.Status != StatusValid || rec.Issuer != "int-1" || !rec.Certificate.Equal(cert) {
		t.Fatalf("inventory: %+v", rec)
	}
	opensslVerify(t, cert, got.Chain)
}

// opensslVerify checks the chain with openssl verify.
func opensslVerify(t *testing.T, cert *x509.Certificate, chain []*x509.Certificate) {
	t.Helper()
	dir := t.TempDir()
	writePEM(t, dir, "root.pem", chain[len(chain)-1])
	writePEM(t, dir, "int.pem", chain[:len(chain)-1]...)
	writePEM(t, dir, "leaf.pem", cert)
	if out := openssl(t, dir, "verify", "-CAfile", "root.pem", "-untrusted", "int.pem", "leaf.pem"); !strings.Contains(out, "leaf.pem: OK") {
		t.Fatalf("openssl verify: %s", out)
	}
}

func TestIssue(t *testing.T) {
	c, s := newTestCA(t)
	for _, kt := range []string{"", "ecdsa-p384", "ed25519", "rsa-2048"} {
		t.Run("key "+kt, func(t *testing.T) {
			got, err := c.Issue(bg, "web", IssueRequest{
				CommonName: "svc.example.com", IPs: []net.IP{net.ParseIP("10.0.0.9")},
				URIs: []string{"spiffe://example.org/ns/a/sa/b"}, KeyType: kt,
			})
			must(t, err)
			block, _ := pem.Decode(got.PrivateKey)
			if block == nil || block.Type != "PRIVATE KEY" {
				t.Fatalf("private key PEM: %q", got.PrivateKey)
			}
			key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			must(t, err)
			if !samePublicKey(got.Certificate.PublicKey, key.(crypto.Signer).Public()) {
				t.Fatal("the key is not the certificate's")
			}
			_, isRSA := key.(*rsa.PrivateKey)
			if ku := got.Certificate.KeyUsage; isRSA != (ku&x509.KeyUsageKeyEncipherment != 0) {
				t.Fatalf("key usage %v for %T", ku, key)
			}
			if d := got.Certificate.NotAfter.Sub(s.clock.Now()); d > 24*time.Hour || d < 24*time.Hour-2*time.Second {
				t.Fatalf("default TTL: %v", d)
			}
			verifyChain(t, got.Certificate, got.Chain, s.clock.Now())
			opensslVerify(t, got.Certificate, got.Chain)
			rec, err := c.Get(bg, got.Serial)
			must(t, err)
			if rec.Source != "rest" {
				t.Fatalf("inventory: %+v", rec)
			}
		})
	}
	if _, err := c.Issue(bg, "web", IssueRequest{CommonName: "svc.example.com", KeyType: "rsa-1024"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rsa-1024 = %v", err)
	}
}

// Every bad request is refused with ErrInvalid (or ErrNotFound for an
// unknown role) and leaves the inventory as it was.
func TestSignRefuses(t *testing.T) {
	c, _ := newTestCA(t)
	_, err := c.WriteRole(bg, Role{Name: "p256only", AllowedDomains: []string{"example.com"}, AllowSubdomains: true,
		AllowedKeyTypes: []string{"ecdsa-p256", "rsa"}, MinRSABits: 3072, RequireCommonName: true})
	must(t, err)
	good := p256(t)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	must(t, err)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(t, err)
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	must(t, err)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	must(t, err)
	tampered := func() []byte { // a valid CSR whose name was changed after signing
		block, _ := pem.Decode(csrFor(t, good, "a.example.com", nil, nil))
		i := strings.Index(string(block.Bytes), "a.example.com")
		block.Bytes[i] = 'b'
		return pem.EncodeToMemory(block)
	}
	for _, tc := range []struct {
		name string
		role string
		csr  []byte
		o    SignOptions
		want error
	}{
		{"signature does not verify", "web", tampered(), SignOptions{}, ErrInvalid},
		{"DNS name outside the role", "web", csrFor(t, good, "", []string{"a.example.com", "evil.com"}, nil), SignOptions{}, ErrInvalid},
		{"common name outside the role", "web", csrFor(t, good, "evil.com", []string{"a.example.com"}, nil), SignOptions{}, ErrInvalid},
		{"IP outside the role", "web", csrFor(t, good, "", nil, []net.IP{net.ParseIP("192.168.0.1")}), SignOptions{}, ErrInvalid},
		{"URI outside the role", "web", csrFor(t, good, "", nil, nil, "spiffe://evil.org/ns/a/sa/b"), SignOptions{}, ErrInvalid},
		{"TTL over the maximum", "web", csrFor(t, good, "a.example.com", nil, nil), SignOptions{TTL: 73 * time.Hour}, ErrInvalid},
		{"negative TTL", "web", csrFor(t, good, "a.example.com", nil, nil), SignOptions{TTL: -time.Hour}, ErrInvalid},
		{"RSA 1024", "web", csrFor(t, rsa1024, "a.example.com", nil, nil), SignOptions{}, ErrInvalid},
		{"RSA under the role's minimum", "p256only", csrFor(t, rsa2048, "a.example.com", nil, nil), SignOptions{}, ErrInvalid},
		{"curve not allowed by the role", "p256only", csrFor(t, p384, "a.example.com", nil, nil), SignOptions{}, ErrInvalid},
		{"P-521 not allowed by default", "web", csrFor(t, p521, "a.example.com", nil, nil), SignOptions{}, ErrInvalid},
		{"Ed25519 not allowed by the role", "p256only", csrFor(t, ed, "a.example.com", nil, nil), SignOptions{}, ErrInvalid},
		{"common name required", "p256only", csrFor(t, good, "", []string{"a.example.com"}, nil), SignOptions{}, ErrInvalid},
		{"no names", "web", csrFor(t, good, "", nil, nil), SignOptions{}, ErrInvalid},
		{"malformed CSR", "web", []byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIBIjAN\n-----END CERTIFICATE REQUEST-----\n"), SignOptions{}, ErrInvalid},
		{"garbage", "web", []byte("not a csr"), SignOptions{}, ErrInvalid},
		{"a certificate, not a CSR", "web", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}}), SignOptions{}, ErrInvalid},
		{"email SAN", "web", emailCSR(t, good), SignOptions{}, ErrInvalid},
		{"unknown role", "nope", csrFor(t, good, "a.example.com", nil, nil), SignOptions{}, ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := countCerts(t, c)
			got, err := c.Sign(bg, tc.role, tc.csr, tc.o)
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("Sign = %v, %v; want %v", got, err, tc.want)
			}
			if after := countCerts(t, c); after != before {
				t.Fatalf("inventory grew from %d to %d", before, after)
			}
		})
	}
}

func emailCSR(t *testing.T, key crypto.Signer) []byte {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"a.example.com"}, EmailAddresses: []string{"a@example.com"}}, key)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// A request the role allows but zlint refuses is not issued: RFC 5280
// wants a fully qualified host in a URI SAN.
func TestLintRefuses(t *testing.T) {
	c, _ := newTestCA(t)
	_, err := c.WriteRole(bg, Role{Name: "spiffe", AllowedURISANs: []string{"spiffe://prod/*"}})
	must(t, err)
	before := countCerts(t, c)
	_, err = c.Sign(bg, "spiffe", csrFor(t, p256(t), "", nil, nil, "spiffe://prod/web"), SignOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "e_ext_san_uri_host_not_fqdn_or_ip") {
		t.Fatalf("Sign = %v, want a lint error", err)
	}
	if countCerts(t, c) != before {
		t.Fatal("a certificate that failed lints was recorded")
	}
	// Lint on its own, for the other issuance paths.
	_, chain, err := c.Issuer(bg)
	must(t, err)
	key := p256(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"a.*.example.com"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	must(t, err)
	bad, err := x509.ParseCertificate(der)
	must(t, err)
	if err := c.Lint(bad); !errors.Is(err, kms.ErrInvalid) || !strings.Contains(err.Error(), "e_san_wildcard_not_first") {
		t.Fatalf("Lint(bad) = %v", err)
	}
	if err := c.Lint(chain[1]); err != nil {
		t.Fatalf("Lint(root) = %v", err)
	}
}

// With URLBase, leaf certificates name the OCSP responder and their
// issuer's CRL, and still pass the lints.
func TestURLBase(t *testing.T) {
	s := newStack(t)
	cfg := s.newCAArgs()
	cfg.URLBase = "https://custos.example.com:8200/"
	c := s.newCA(t, cfg)
	_, err := c.Init(bg, InitOptions{})
	must(t, err)
	_, err = c.WriteRole(bg, webRole())
	must(t, err)
	got, err := c.Issue(bg, "web", IssueRequest{CommonName: "a.example.com"})
	must(t, err)
	if x := got.Certificate; !slices.Equal(x.OCSPServer, []string{"https://custos.example.com:8200/v1/ca/ocsp"}) ||
		!slices.Equal(x.IssuingCertificateURL, []string{"https://custos.example.com:8200/v1/ca/issuer/int-1"}) ||
		!slices.Equal(x.CRLDistributionPoints, []string{"https://custos.example.com:8200/v1/ca/crl/int-1"}) {
		t.Fatalf("URLs: %v %v %v", x.OCSPServer, x.IssuingCertificateURL, x.CRLDistributionPoints)
	}

	// SetURLs gives a template built elsewhere the same, for the issuer it
	// names, replacing what a renewal copied from its predecessor.
	_, chain, err := c.Issuer(bg)
	must(t, err)
	old := &x509.Certificate{
		OCSPServer: []string{"http://old.example/ocsp"},
		ExtraExtensions: []pkix.Extension{
			{Id: oidAuthorityInfoAccess, Value: []byte{0x30, 0x00}},
			{Id: oidCRLDistributionPoints, Value: []byte{0x30, 0x00}},
			{Id: asn1.ObjectIdentifier{1, 2, 3}, Value: []byte{0x05, 0x00}},
		},
	}
	must(t, c.SetURLs(bg, old, chain[0]))
	x := got.Certificate
	if !slices.Equal(old.OCSPServer, x.OCSPServer) || !slices.Equal(old.IssuingCertificateURL, x.IssuingCertificateURL) ||
		!slices.Equal(old.CRLDistributionPoints, x.CRLDistributionPoints) {
		t.Fatalf("SetURLs: %v %v %v", old.OCSPServer, old.IssuingCertificateURL, old.CRLDistributionPoints)
	}
	if len(old.ExtraExtensions) != 1 || !old.ExtraExtensions[0].Id.Equal(asn1.ObjectIdentifier{1, 2, 3}) {
		t.Fatalf("extra extensions left: %v", old.ExtraExtensions)
	}
	if err := c.SetURLs(bg, &x509.Certificate{}, chain[1]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetURLs for the root: %v, want ErrInvalid", err)
	}
}

// CheckIssue answers as Issue would, and issues nothing.
func TestCheckIssue(t *testing.T) {
	c, _ := newTestCA(t)
	must(t, c.CheckIssue(bg, "web", IssueRequest{URIs: []string{"spiffe://example.org/ns/a/sa/b"}}))
	for name, tc := range map[string]struct {
		role string
		ir   IssueRequest
		want error
	}{
		"URI outside the role": {"web", IssueRequest{URIs: []string{"spiffe://other.org/ns/a/sa/b"}}, ErrInvalid},
		"TTL over the maximum": {"web", IssueRequest{URIs: []string{"spiffe://example.org/ns/a/sa/b"}, TTL: 10000 * time.Hour}, ErrInvalid},
		"no such role":         {"nope", IssueRequest{URIs: []string{"spiffe://example.org/ns/a/sa/b"}}, ErrNotFound},
		"malformed URI":        {"web", IssueRequest{URIs: []string{"spiffe://%zz"}}, ErrInvalid},
	} {
		if err := c.CheckIssue(bg, tc.role, tc.ir); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	page, err := c.List(bg, Filter{})
	must(t, err)
	if len(page.Certs) != 0 {
		t.Fatalf("CheckIssue issued %d certificates", len(page.Certs))
	}
}
