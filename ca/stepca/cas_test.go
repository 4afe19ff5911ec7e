package stepca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	casapi "github.com/smallstep/certificates/cas/apiv1"
)

// lyingSigner claims pub as its key and signs with key.
type lyingSigner struct {
	key   crypto.Signer
	pub   crypto.PublicKey
	signs *atomic.Int64
}

func (s lyingSigner) Public() crypto.PublicKey { return s.pub }
func (s lyingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	s.signs.Add(1)
	return s.key.Sign(r, d, o)
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// issuerCerts makes a root and, under it, an issuing certificate for key
// shaped by edit.
func issuerCerts(t *testing.T, key *ecdsa.PrivateKey, edit func(*x509.Certificate)) []*x509.Certificate {
	t.Helper()
	rootKey := newKey(t)
	now := time.Now()
	rootTpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cas test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	root := mustCert(t, rootTpl, rootTpl, rootKey.Public(), rootKey)
	intTpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cas test intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	if edit != nil {
		edit(intTpl)
	}
	return []*x509.Certificate{mustCert(t, intTpl, root, key.Public(), rootKey), root}
}

func leafRequest(t *testing.T) *casapi.CreateCertificateRequest {
	return &casapi.CreateCertificateRequest{
		Template: &x509.Certificate{Subject: pkix.Name{CommonName: "a.test"}, DNSNames: []string{"a.test"}, PublicKey: newKey(t).Public()},
		Lifetime: time.Hour,
	}
}

// TestIssuingCASChecksSigning: the issuing CAS signs only with the issuing
// certificate's key, only a signature that verifies with it, only with a
// CA allowed to sign certificates, and never with SHA-1; a certificate it
// returns verifies from the issuing certificate, which is the chain it
// sends.
func TestIssuingCASChecksSigning(t *testing.T) {
	key := newKey(t)
	good := issuerCerts(t, key, nil)
	for _, tc := range []struct {
		name      string
		signer    func(*atomic.Int64) crypto.Signer
		chain     []*x509.Certificate
		edit      func(*x509.Certificate)
		wantErr   bool
		wantSigns int64
	}{
		{name: "issued", chain: good, wantSigns: 1},
		{name: "another key", chain: good, wantErr: true,
			signer: func(n *atomic.Int64) crypto.Signer { k := newKey(t); return lyingSigner{k, k.Public(), n} }},
		{name: "a signer claiming the issuer's key", chain: good, wantErr: true, wantSigns: 1,
			signer: func(n *atomic.Int64) crypto.Signer { return lyingSigner{newKey(t), key.Public(), n} }},
		{name: "not a CA", wantErr: true,
			chain: issuerCerts(t, key, func(c *x509.Certificate) { c.IsCA = false })},
		{name: "no basic constraints", wantErr: true,
			chain: issuerCerts(t, key, func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = false, false })},
		{name: "key usage without certSign", wantErr: true,
			chain: issuerCerts(t, key, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature })},
		{name: "SHA-1", chain: good, wantErr: true,
			edit: func(c *x509.Certificate) { c.SignatureAlgorithm = x509.ECDSAWithSHA1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var signs atomic.Int64
			signer := crypto.Signer(lyingSigner{key, key.Public(), &signs})
			if tc.signer != nil {
				signer = tc.signer(&signs)
			}
			c := &issuingCAS{clock: &fakeClock{}, timeout: time.Minute,
				issuer: func(context.Context) (crypto.Signer, []*x509.Certificate, error) { return signer, tc.chain, nil }}
			req := leafRequest(t)
			if tc.edit != nil {
				tc.edit(req.Template)
			}
			resp, err := c.CreateCertificate(req)
			if got := signs.Load(); got != tc.wantSigns {
				t.Errorf("signed %d times, want %d", got, tc.wantSigns)
			}
			if tc.wantErr {
				if err == nil {
					t.Fatal("issued")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := resp.Certificate.CheckSignatureFrom(tc.chain[0]); err != nil {
				t.Fatalf("certificate does not verify: %v", err)
			}
			if len(resp.CertificateChain) != 1 || !resp.CertificateChain[0].Equal(tc.chain[0]) {
				t.Fatalf("chain %v, want the issuing certificate only", resp.CertificateChain)
			}
		})
	}
}

// TestIssuingCASRotation: a new issuer chain is used, and checked, at
// once.
func TestIssuingCASRotation(t *testing.T) {
	key := newKey(t)
	chains := [][]*x509.Certificate{
		issuerCerts(t, key, nil),
		issuerCerts(t, key, nil),
		issuerCerts(t, key, func(c *x509.Certificate) { c.IsCA = false }),
	}
	var at int
	c := &issuingCAS{clock: &fakeClock{}, timeout: time.Minute,
		issuer: func(context.Context) (crypto.Signer, []*x509.Certificate, error) { return key, chains[at], nil }}
	for at = range chains {
		for range 2 {
			resp, err := c.CreateCertificate(leafRequest(t))
			if at == 2 {
				if err == nil {
					t.Fatal("issued under a certificate that is not a CA")
				}
				continue
			}
			if err != nil {
				t.Fatalf("chain %d: %v", at, err)
			}
			if !resp.CertificateChain[0].Equal(chains[at][0]) {
				t.Fatalf("chain %d: sent the issuing certificate of another chain", at)
			}
			if err := resp.Certificate.CheckSignatureFrom(chains[at][0]); err != nil {
				t.Fatalf("chain %d: %v", at, err)
			}
		}
	}
}
