package stepca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/kms"
	"github.com/smallstep/certificates/acme"
	casapi "github.com/smallstep/certificates/cas/apiv1"
	"go.step.sm/crypto/x509util"
)

// issuingCAS is step-ca's certificate authority service (what
// authority.WithX509SignerFunc would make, step's SoftCAS) with the linter in
// front of the signer. Step-ca's only other hook before signing, the
// authority's X509 enforcers, is skipped by renewals and rekeys; the CAS sees
// every certificate. It completes the template as SoftCAS and
// x509util.CreateCertificate would (validity, issuer, serial, key
// identifiers), lets Config.Template add what custos puts in every
// certificate (AIA, CRL distribution point), lints exactly that, signs it,
// and checks the signature with the issuer's public key once. With
// Config.SignTemplate (custos's CA) the TBSCertificate is built once,
// linted and signed by the kms signer, which checks its signatures; without
// it, Config.Linter lints a TBSCertificate of its own and
// x509.CreateCertificate, which refuses a signer whose public key is not
// the issuing certificate's, signs and verifies the signature it got with
// that key, so it is not verified again here. What else
// Certificate.CheckSignatureFrom would check of the issuing certificate
// (a CA, allowed to sign certificates) and the chain sent after the leaf
// are worked out once per issuer chain (issuerChain), not per certificate.
type issuingCAS struct {
	issuer   func(ctx context.Context) (crypto.Signer, []*x509.Certificate, error)
	template func(ctx context.Context, tpl, issuer *x509.Certificate) error
	lint     func(context.Context, *x509.Certificate) error
	// signTemplate, if set, lints and signs in one step (Config.SignTemplate).
	signTemplate func(ctx context.Context, tpl, parent *x509.Certificate, signer crypto.Signer) (*x509.Certificate, error)
	clock        kms.Clock
	timeout      time.Duration
	// check, if set, refuses a new certificate against the policy of the
	// provisioner that asked for it, before anything is signed.
	check func(context.Context, *casapi.CreateCertificateRequest) error
	// chain caches what sign needs of the last issuer chain it saw.
	chain atomic.Pointer[issuerChain]
}

var (
	_ casapi.CertificateAuthorityService = (*issuingCAS)(nil)
	_ casapi.CertificateAuthoritySigner  = (*issuingCAS)(nil)
)

// Type reports SoftCAS: step-ca treats this service as its own soft CA.
func (c *issuingCAS) Type() casapi.Type { return casapi.SoftCAS }

// CreateCertificate signs a new certificate.
func (c *issuingCAS) CreateCertificate(req *casapi.CreateCertificateRequest) (*casapi.CreateCertificateResponse, error) {
	if req.Template == nil || req.Lifetime <= 0 {
		return nil, errors.New("stepca: create certificate: template and lifetime are required")
	}
	if c.check != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		err := c.check(ctx, req)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	now := c.clock.Now()
	if req.Template.NotBefore.IsZero() {
		req.Template.NotBefore = now.Add(-req.Backdate)
	}
	if req.Template.NotAfter.IsZero() {
		req.Template.NotAfter = now.Add(req.Lifetime)
	}
	cert, chain, err := c.sign(req.Template)
	if err != nil {
		return nil, err
	}
	return &casapi.CreateCertificateResponse{Certificate: cert, CertificateChain: chain}, nil
}

// RenewCertificate signs the renewal of a certificate.
func (c *issuingCAS) RenewCertificate(req *casapi.RenewCertificateRequest) (*casapi.RenewCertificateResponse, error) {
	if req.Template == nil || req.Lifetime <= 0 {
		return nil, errors.New("stepca: renew certificate: template and lifetime are required")
	}
	now := c.clock.Now()
	req.Template.NotBefore = now.Add(-req.Backdate)
	req.Template.NotAfter = now.Add(req.Lifetime)
	cert, chain, err := c.sign(req.Template)
	if err != nil {
		return nil, err
	}
	return &casapi.RenewCertificateResponse{Certificate: cert, CertificateChain: chain}, nil
}

// RevokeCertificate has nothing to do: revocation is recorded in the
// database (and the Recorder) by the authority.
func (c *issuingCAS) RevokeCertificate(req *casapi.RevokeCertificateRequest) (*casapi.RevokeCertificateResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	_, chain, err := c.issuer(ctx)
	if err != nil {
		return nil, fmt.Errorf("stepca: issuer: %w", err)
	}
	return &casapi.RevokeCertificateResponse{Certificate: req.Certificate, CertificateChain: c.issuerChain(chain).issuing}, nil
}

// GetSigner returns the issuer's signer.
func (c *issuingCAS) GetSigner() (crypto.Signer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	s, _, err := c.issuer(ctx)
	return s, err
}

func (c *issuingCAS) sign(tpl *x509.Certificate) (*x509.Certificate, []*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	signer, chain, err := c.issuer(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("stepca: issuer: %w", err)
	}
	if len(chain) == 0 || signer == nil {
		return nil, nil, errors.New("stepca: issuer returned no signer or certificate")
	}
	ic := c.issuerChain(chain)
	if ic.err != nil {
		return nil, nil, ic.err
	}
	parent := chain[0]
	if err := complete(tpl, parent); err != nil {
		return nil, nil, err
	}
	if c.template != nil {
		if err := c.template(ctx, tpl, parent); err != nil {
			return nil, nil, fmt.Errorf("stepca: template: %w", err)
		}
	}
	if insecureAlgorithm(tpl.SignatureAlgorithm) {
		return nil, nil, fmt.Errorf("stepca: sign: signature algorithm %v is not allowed", tpl.SignatureAlgorithm)
	}
	if c.signTemplate != nil {
		cert, err := c.signTemplate(ctx, tpl, parent, signer)
		switch {
		case errors.Is(err, ca.ErrInvalid):
			return nil, nil, acme.NewDetailedError(acme.ErrorBadCSRType, "certificate refused by lint: %v", err)
		case err != nil:
			return nil, nil, fmt.Errorf("stepca: sign: %w", err)
		}
		return cert, ic.issuing, nil
	}
	if c.lint != nil {
		if err := c.lint(ctx, tpl); err != nil {
			return nil, nil, acme.NewDetailedError(acme.ErrorBadCSRType, "certificate refused by lint: %v", err)
		}
	}
	// CreateCertificate refuses a signer whose key is not parent's and
	// verifies the signature with it: the one post-sign verification.
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, tpl.PublicKey, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("stepca: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("stepca: parse signed certificate: %w", err)
	}
	return cert, ic.issuing, nil
}

// issuerChain is what signing needs of one issuer chain: the chain sent
// after the leaf, and whether its first certificate may sign certificates.
type issuerChain struct {
	chain   []*x509.Certificate // as the issuer returned it
	issuing []*x509.Certificate // issuingChain(chain)
	err     error               // the issuing certificate cannot sign
}

// issuerChain returns the cached issuerChain of chain, working it out
// again only when the issuer returns another chain (a rotation).
func (c *issuingCAS) issuerChain(chain []*x509.Certificate) *issuerChain {
	if ic := c.chain.Load(); ic != nil && equalChain(ic.chain, chain) {
		return ic
	}
	ic := &issuerChain{chain: chain, issuing: issuingChain(chain), err: canSign(chain[0])}
	c.chain.Store(ic)
	return ic
}

func equalChain(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !bytes.Equal(a[i].Raw, b[i].Raw) {
			return false
		}
	}
	return true
}

// canSign checks what Certificate.CheckSignatureFrom checks of a parent
// besides the signature (RFC 5280 4.2.1.9, 4.2.1.3): it is a CA, and its
// key usage, if any, allows signing certificates.
func canSign(parent *x509.Certificate) error {
	if parent.Version == 3 && !parent.BasicConstraintsValid || parent.BasicConstraintsValid && !parent.IsCA {
		return errors.New("stepca: the issuing certificate is not a CA")
	}
	if parent.KeyUsage != 0 && parent.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("stepca: the issuing certificate's key usage does not allow signing certificates")
	}
	if parent.PublicKeyAlgorithm == x509.UnknownPublicKeyAlgorithm {
		return errors.New("stepca: the issuing certificate's key algorithm is not supported")
	}
	return nil
}

// insecureAlgorithm reports the signature algorithms CheckSignatureFrom
// refuses to verify (MD2, MD5, SHA-1).
func insecureAlgorithm(a x509.SignatureAlgorithm) bool {
	switch a {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return true
	}
	return false
}

// complete fills in what the signer would: issuer, serial, key identifiers.
func complete(tpl, parent *x509.Certificate) error {
	tpl.Issuer = parent.Subject
	tpl.AuthorityKeyId = parent.SubjectKeyId
	if tpl.SerialNumber == nil {
		// 20 bytes, 112 of them random bits, growing with time.
		serial, err := ca.NewSerial(20)
		if err != nil {
			return err
		}
		tpl.SerialNumber = serial
	}
	if tpl.SubjectKeyId == nil {
		id, err := x509util.GenerateSubjectKeyID(tpl.PublicKey)
		if err != nil {
			return fmt.Errorf("stepca: subject key id: %w", err)
		}
		tpl.SubjectKeyId = id
	}
	return nil
}

// issuingChain is chain without its self-signed roots: what is sent after
// the leaf.
func issuingChain(chain []*x509.Certificate) []*x509.Certificate {
	out := make([]*x509.Certificate, 0, len(chain))
	for _, c := range chain {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			continue
		}
		out = append(out, c)
	}
	return out
}
