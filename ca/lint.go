package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// lintSources are the zlint sources that apply to a private CA: the RFCs
// (X.509 profile, algorithm identifiers, IDNA, OCSP) and the community
// lints (malformed names, weak keys). Left out are the rules of public
// trust, which a private CA neither follows nor needs: the CA/Browser Forum
// requirements (TLS, EV, S/MIME, code signing: they demand CT, OCSP and CRL
// URLs, organisation fields, 398-day limits and registered domains), the
// root programs (Mozilla, Apple, Chrome), ETSI, and RFC 6962 (CT).
// lintExcluded are community lints about public CAs: the eMudhra lint
// checks every certificate's signature against a compromised public CA's
// P-384 key, which a private issuer cannot be, and costs more than the
// rest of issuance.
var lintSources = lint.SourceList{
	lint.RFC5280, lint.RFC5480, lint.RFC5891, lint.RFC3279, lint.RFC8813, lint.RFC6960, lint.Community,
}

var lintExcluded = []string{"e_cert_issued_by_compromised_emudhra_ca"}

func lintRegistry() (lint.Registry, error) {
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: lintSources, ExcludeNames: lintExcluded})
	if err != nil {
		return nil, fmt.Errorf("ca: lint registry: %w", err)
	}
	return reg, nil
}

// Lint runs zlint over cert with the lints that apply to a private CA (see
// lintSources) and returns an error matching ErrInvalid that names every
// lint at error or fatal level. Warnings and notices pass here; custos's
// own templates are tested to raise none (see LintFindings).
func (c *CA) Lint(cert *x509.Certificate) error {
	f, err := c.LintFindings(cert)
	if err != nil {
		return err
	}
	if len(f.Errors) == 0 {
		return nil
	}
	return fmt.Errorf("%w: the certificate fails lints: %s", ErrInvalid, strings.Join(f.Errors, ", "))
}

// Findings are the lints that did not pass, by level, sorted, each named
// with its details.
type Findings struct {
	Errors   []string // error or fatal
	Warnings []string
}

// LintFindings runs the lints of Lint over cert and reports every error
// and warning.
func (c *CA) LintFindings(cert *x509.Certificate) (Findings, error) {
	zc, err := zx509.ParseCertificate(cert.Raw)
	if err != nil {
		return Findings{}, fmt.Errorf("%w: lint: the certificate does not parse: %v", ErrInvalid, err)
	}
	return findings(zlint.LintCertificateEx(zc, c.lints)), nil
}

// LintCRLFindings runs the CRL lints of the same sources over a DER CRL.
func (c *CA) LintCRLFindings(der []byte) (Findings, error) {
	rl, err := zx509.ParseRevocationList(der)
	if err != nil {
		return Findings{}, fmt.Errorf("%w: lint: the CRL does not parse: %v", ErrInvalid, err)
	}
	return findings(zlint.LintRevocationListEx(rl, c.lints)), nil
}

func findings(rs *zlint.ResultSet) Findings {
	var f Findings
	for name, r := range rs.Results {
		if r.Details != "" {
			name += " (" + r.Details + ")"
		}
		switch r.Status {
		case lint.Error, lint.Fatal:
			f.Errors = append(f.Errors, name)
		case lint.Warn:
			f.Warnings = append(f.Warnings, name)
		}
	}
	slices.Sort(f.Errors)
	slices.Sort(f.Warnings)
	return f
}

// linter stands in for an issuer while a certificate is linted: a
// throwaway key of the issuer's type and a certificate with the issuer's
// subject and key identifier, so that a certificate it signs has the very
// TBSCertificate the issuer will sign (Boulder's lint issuer).
type linter struct {
	issuer *x509.Certificate
	key    crypto.Signer
}

func newLinter(real *x509.Certificate) (*linter, error) {
	var key crypto.Signer
	var err error
	switch pub := real.PublicKey.(type) {
	case *ecdsa.PublicKey:
		key, err = ecdsa.GenerateKey(pub.Curve, rand.Reader)
	case *rsa.PublicKey:
		key, err = rsa.GenerateKey(rand.Reader, pub.N.BitLen())
	case ed25519.PublicKey:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("ca: lint issuer: unsupported issuer key %T", pub)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: lint issuer key: %w", err)
	}
	tmpl := *real
	tmpl.PublicKey = key.Public()
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: lint issuer: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: lint issuer: %w", err)
	}
	return &linter{issuer: cert, key: key}, nil
}

// linterFor returns the lint stand-in of iss, made once per issuer.
func (c *CA) linterFor(iss *issuer) (*linter, error) {
	if l, ok := c.linters.Load(iss.id); ok {
		return l.(*linter), nil
	}
	l, err := newLinter(iss.cert)
	if err != nil {
		return nil, err
	}
	got, _ := c.linters.LoadOrStore(iss.id, l)
	return got.(*linter), nil
}

// LintTemplate lints the certificate the active intermediate would sign
// from tmpl for pub, made with the intermediate's lint stand-in: for paths
// that build their own template (the step-ca embedding), to lint before
// they sign. tmpl needs its serial number.
func (c *CA) LintTemplate(ctx context.Context, tmpl *x509.Certificate, pub crypto.PublicKey) error {
	set, err := c.issuers(ctx)
	if err != nil {
		return err
	}
	_, err = c.lintedCert(set.active, tmpl, pub)
	return err
}

// lintedCert signs tmpl for pub with iss's lint stand-in and lints the
// result, which it returns.
func (c *CA) lintedCert(iss *issuer, tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	l, err := c.linterFor(iss)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, l.issuer, pub, l.key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return cert, c.Lint(cert)
}
