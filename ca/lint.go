package ca

import (
	"context"
	"crypto"
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
	zc, err := zx509.ParseCertificate(cert.Raw)
	if err != nil {
		return fmt.Errorf("%w: lint: the certificate does not parse: %v", ErrInvalid, err)
	}
	return c.lintErrors(zc)
}

// lintErrors is Lint over a parsed certificate. It runs the lints as
// zlint.LintCertificateEx does, without building a result set or a new
// instance of every lint for every certificate (lintRunner).
func (c *CA) lintErrors(zc *zx509.Certificate) error {
	var errs []string
	for i := range c.certLints {
		r := &c.certLints[i]
		if res := r.run(zc); res.Status == lint.Error || res.Status == lint.Fatal {
			errs = append(errs, finding(r.l.Name, &res))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	slices.Sort(errs)
	return fmt.Errorf("%w: the certificate fails lints: %s", ErrInvalid, strings.Join(errs, ", "))
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

// finding names a lint that did not pass, with its details.
func finding(name string, r *lint.LintResult) string {
	if r.Details != "" {
		name += " (" + r.Details + ")"
	}
	return name
}

func findings(rs *zlint.ResultSet) Findings {
	var f Findings
	for name, r := range rs.Results {
		switch r.Status {
		case lint.Error, lint.Fatal:
			f.Errors = append(f.Errors, finding(name, r))
		case lint.Warn:
			f.Warnings = append(f.Warnings, finding(name, r))
		}
	}
	slices.Sort(f.Errors)
	slices.Sort(f.Warnings)
	return f
}

// SignTemplate lints the certificate parent's key would sign from tmpl
// (for tmpl.PublicKey) and signs exactly that with signer, parent's key:
// for paths that build their own template (the step-ca embedding). The
// TBSCertificate is built once, by crypto/x509, and the signature is
// checked once, by the kms signer that makes it (as for custos's own
// issuance, signLeaf). tmpl needs its serial number. A template that
// crypto/x509 refuses, or a certificate that fails a lint, is ErrInvalid.
// Record and PrepareRecord take the certificate returned (that pointer)
// as issued by parent without checking its signature again.
func (c *CA) SignTemplate(ctx context.Context, tmpl, parent *x509.Certificate, signer crypto.Signer) (*x509.Certificate, error) {
	tbs, err := c.lintTBS(parent, tmpl, tmpl.PublicKey)
	if err != nil {
		return nil, err
	}
	cert, err := tbs.sign(signer)
	if err != nil {
		return nil, err
	}
	if set, err := c.issuers(ctx); err == nil {
		c.signed.remember(cert, parent, set)
	}
	return cert, nil
}

// lintTBS builds the TBSCertificate parent's key signs from tmpl for pub,
// lints it and returns it, ready to be signed.
func (c *CA) lintTBS(parent, tmpl *x509.Certificate, pub crypto.PublicKey) (*tbsCertificate, error) {
	tbs, err := buildTBS(tmpl, parent, pub)
	if err != nil {
		return nil, err
	}
	der, err := tbs.lintCertificate()
	if err != nil {
		return nil, err
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: lint: the certificate does not parse: %v", ErrInvalid, err)
	}
	if err := c.lintErrors(zc); err != nil {
		return nil, err
	}
	return tbs, nil
}
