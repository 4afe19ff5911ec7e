package auth

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

const (
	maxRolePEM      = 64 << 10
	maxRoleCAs      = 16
	maxRolePatterns = 64
	maxGlobLen      = 256
)

// CertRole lets a workload holding a client certificate log in: a
// certificate that chains to one of CACertificates for client
// authentication and satisfies every non-empty Allowed list gets a token
// with Policies.
//
// Patterns are globs in which "*" stands for one or more characters: in
// AllowedDNSNames it stays within one DNS label (no "."), in AllowedURIs
// within one path segment (no "/"), so that spiffe://example.org/ns/*/sa/*
// matches exactly one namespace and one service account; in
// AllowedCommonNames it matches anything. DNS names compare without regard
// to case. A list matches if any of the certificate's values matches any
// pattern. A role with no Allowed lists admits any client certificate its
// CAs issued.
type CertRole struct {
	Name string `json:"name"`
	// CACertificates is PEM: the CA certificates a client chain must end
	// at. Intermediates may come from the client.
	CACertificates     string   `json:"ca_certificates"`
	AllowedCommonNames []string `json:"allowed_common_names,omitempty"`
	AllowedDNSNames    []string `json:"allowed_dns_names,omitempty"`
	AllowedURIs        []string `json:"allowed_uris,omitempty"`
	// Policies the token gets ("default" is added; "root" is refused).
	Policies []string `json:"policies,omitempty"`
	// CRLURL, if set, is where custos fetches the CRL of the CA that issues
	// the role's clients (http or https; see crl.go). A certificate it lists
	// cannot log in, and neither can any while the CRL cannot be used. A
	// role with a CRL URL should trust a single issuing CA.
	CRLURL string `json:"crl_url,omitempty"`
	// TTL and MaxTTL of the token; 0 means the Config's. The token never
	// outlives the certificate.
	TTL    time.Duration `json:"ttl,omitempty"`
	MaxTTL time.Duration `json:"max_ttl,omitempty"`
}

// validate checks the role and returns its CA pool.
func (s *Service) validateRole(r *CertRole) (*x509.CertPool, error) {
	if err := validName("role", r.Name); err != nil {
		return nil, err
	}
	pool, err := parseCAs(r.CACertificates)
	if err != nil {
		return nil, fmt.Errorf("%w: role %q: %v", ErrInvalid, r.Name, err)
	}
	lists := []struct {
		field string
		pats  []string
	}{
		{"allowed_common_names", r.AllowedCommonNames},
		{"allowed_dns_names", r.AllowedDNSNames},
		{"allowed_uris", r.AllowedURIs},
	}
	for _, l := range lists {
		if len(l.pats) > maxRolePatterns {
			return nil, fmt.Errorf("%w: role %q: %s: more than %d patterns", ErrInvalid, r.Name, l.field, maxRolePatterns)
		}
		for _, p := range l.pats {
			if err := checkText(l.field+" pattern", p, maxGlobLen); err != nil || p == "" || strings.ContainsAny(p, " \t") {
				return nil, fmt.Errorf("%w: role %q: %s: bad pattern %q: want 1 to %d printable characters without spaces",
					ErrInvalid, r.Name, l.field, truncate(p, 64), maxGlobLen)
			}
		}
	}
	if err := checkCRLURL(r.CRLURL); err != nil {
		return nil, fmt.Errorf("%w: role %q: %v", ErrInvalid, r.Name, err)
	}
	if slices.Contains(r.Policies, PolicyRoot) {
		return nil, fmt.Errorf("%w: role %q: a certificate role cannot grant the root policy", ErrInvalid, r.Name)
	}
	if _, err := normalizePolicies(r.Policies); err != nil {
		return nil, err
	}
	if _, _, err := s.ttls(r.TTL, r.MaxTTL); err != nil {
		return nil, err
	}
	return pool, nil
}

// parseCAs parses PEM CA certificates into a pool.
func parseCAs(pemText string) (*x509.CertPool, error) {
	if len(pemText) > maxRolePEM {
		return nil, fmt.Errorf("ca_certificates: larger than %d bytes", maxRolePEM)
	}
	pool := x509.NewCertPool()
	rest, n := []byte(pemText), 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("ca_certificates: unexpected PEM block %q", truncate(b.Type, 32))
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca_certificates: certificate %d: %v", n+1, err)
		}
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("ca_certificates: certificate %d (%q) is not a CA", n+1, truncate(c.Subject.CommonName, 64))
		}
		pool.AddCert(c)
		n++
	}
	switch {
	case strings.TrimSpace(string(rest)) != "":
		return nil, fmt.Errorf("ca_certificates: data that is not PEM")
	case n == 0:
		return nil, fmt.Errorf("ca_certificates: no certificate")
	case n > maxRoleCAs:
		return nil, fmt.Errorf("ca_certificates: more than %d certificates", maxRoleCAs)
	}
	return pool, nil
}

// WriteCertRole validates and stores a certificate-login role, replacing
// any of that name.
func (s *Service) WriteCertRole(ctx context.Context, r CertRole) error {
	if _, err := s.validateRole(&r); err != nil {
		return err
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("auth: encode role: %w", err)
	}
	if err := s.store.Put(ctx, tableRoles, []byte(r.Name), raw); err != nil {
		return fmt.Errorf("auth: write role %q: %w", r.Name, err)
	}
	return nil
}

// ReadCertRole returns a role.
func (s *Service) ReadCertRole(ctx context.Context, name string) (*CertRole, error) {
	if err := validName("role", name); err != nil {
		return nil, err
	}
	raw, found, err := s.get(ctx, tableRoles, []byte(name))
	if err != nil {
		return nil, fmt.Errorf("auth: read role %q: %w", name, err)
	}
	if !found {
		return nil, fmt.Errorf("%w: role %q", ErrNotFound, name)
	}
	r := new(CertRole)
	if err := json.Unmarshal(raw, r); err != nil {
		return nil, fmt.Errorf("auth: read role %q: corrupt record: %w", name, err)
	}
	return r, nil
}

// ListCertRoles returns the role names, sorted.
func (s *Service) ListCertRoles(ctx context.Context) ([]string, error) {
	var names []string
	err := s.listAll(ctx, tableRoles, nil, true, func(kv raftstore.KV) error {
		names = append(names, string(kv.Key))
		return nil
	})
	return names, err
}

// DeleteCertRole removes a role; removing an absent one does nothing.
// Tokens already issued through it stay valid until they expire or are
// revoked.
func (s *Service) DeleteCertRole(ctx context.Context, name string) error {
	if err := validName("role", name); err != nil {
		return err
	}
	if err := s.store.Delete(ctx, tableRoles, []byte(name)); err != nil {
		return fmt.Errorf("auth: delete role %q: %w", name, err)
	}
	return nil
}

// globMatch reports whether v matches p, where "*" in p stands for one or
// more characters other than sep (any characters when sep is 0). It works
// on runes, so "*" never matches half a character.
func globMatch(pattern, value string, sep rune) bool {
	p, v := []rune(pattern), []rune(value)
	// m[j]: p[:i] matches v[:j], for the i of the current pass.
	m := make([]bool, len(v)+1)
	next := make([]bool, len(v)+1)
	m[0] = true
	for i := range p {
		next[0] = false
		if p[i] == '*' {
			run := false // some k in the current sep-free stretch has m[k]
			for j := 1; j <= len(v); j++ {
				if sep != 0 && v[j-1] == sep {
					run, next[j] = false, false
					continue
				}
				run = run || m[j-1]
				next[j] = run
			}
		} else {
			for j := 1; j <= len(v); j++ {
				next[j] = m[j-1] && v[j-1] == p[i]
			}
		}
		m, next = next, m
	}
	return m[len(v)]
}
