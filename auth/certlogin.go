package auth

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/custos-pki/custos/raftstore"
)

const (
	// maxPeerChain bounds the certificates a client may present.
	maxPeerChain = 8
	// maxSANs bounds the names of one kind checked against a role, and so
	// the work a certificate can cause.
	maxSANs = 64
)

// LoginWithCert issues a token for the client whose TLS handshake presented
// peerCerts (leaf first, as in tls.ConnectionState.PeerCertificates). The
// handshake proved possession of the leaf's key; the certificates must never
// come from anywhere else (a header, a body). The chain must verify against
// the role's CA certificates for client authentication at the Clock's time,
// and the leaf must satisfy the role's constraints and not be revoked: by
// the Config's RevocationChecker, if any, nor on the role's CRL, if it
// names one. The token is an orphan
// with the role's policies, and expires no later than the leaf.
func (s *Service) LoginWithCert(ctx context.Context, peerCerts []*x509.Certificate, roleName string) (string, *Token, error) {
	if len(peerCerts) == 0 || peerCerts[0] == nil {
		return "", nil, fmt.Errorf("%w: no client certificate", ErrPermissionDenied)
	}
	if len(peerCerts) > maxPeerChain {
		return "", nil, fmt.Errorf("%w: client chain longer than %d certificates", ErrPermissionDenied, maxPeerChain)
	}
	role, err := s.ReadCertRole(ctx, roleName)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		return "", nil, fmt.Errorf("%w: certificate login: no role %q", ErrPermissionDenied, truncate(roleName, 64))
	}
	if err != nil {
		return "", nil, err
	}
	roots, err := s.validateRole(role)
	if err != nil {
		return "", nil, fmt.Errorf("auth: certificate login: stored role %q is invalid: %w", role.Name, err)
	}
	leaf := peerCerts[0]
	now := s.now()
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range peerCerts[1:] {
		if c != nil {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return "", nil, fmt.Errorf("%w: certificate login: role %q: %v", ErrPermissionDenied, role.Name, err)
	}
	if why := role.mismatch(leaf); why != "" {
		return "", nil, fmt.Errorf("%w: certificate login: role %q: %s", ErrPermissionDenied, role.Name, why)
	}
	if rc := s.cfg.Revocation; rc != nil {
		revoked, err := rc.Revoked(ctx, leaf)
		if err != nil {
			return "", nil, fmt.Errorf("auth: certificate login: role %q: revocation check: %w", role.Name, err)
		}
		if revoked {
			return "", nil, fmt.Errorf("%w: certificate login: role %q: the certificate is revoked", ErrPermissionDenied, role.Name)
		}
	}
	if role.CRLURL != "" && len(chains) > 0 && len(chains[0]) > 1 {
		revoked, err := s.revokedByCRL(ctx, role.CRLURL, leaf, chains[0][1])
		if err != nil {
			return "", nil, fmt.Errorf("auth: certificate login: role %q: %w", role.Name, err)
		}
		if revoked {
			return "", nil, fmt.Errorf("%w: certificate login: role %q: the certificate is on the role's CRL", ErrPermissionDenied, role.Name)
		}
	}

	t, err := s.newChild(nil, TokenRequest{
		Policies: role.Policies, TTL: role.TTL, MaxTTL: role.MaxTTL, Renewable: true,
		DisplayName: "cert-" + role.Name, Meta: certMeta(role.Name, leaf),
	})
	if err != nil {
		return "", nil, err
	}
	t.ExpiresAt = earliest(t.ExpiresAt, leaf.NotAfter.UTC())
	t.MaxExpiresAt = earliest(t.MaxExpiresAt, leaf.NotAfter.UTC())
	return s.insertFor(ctx, t, nil, certID(leaf))
}

// certID names a certificate by its issuer and serial: the first 16 bytes
// of the SHA-256 of the issuer's name and the serial, both in hex.
func certID(c *x509.Certificate) string {
	h := sha256.Sum256(c.RawIssuer)
	return hex.EncodeToString(h[:16]) + "." + c.SerialNumber.Text(16)
}

func certTokenKey(cert, accessor string) []byte { return []byte(cert + "/" + accessor) }

// RevokeCertTokens revokes every token that a login with cert (matched by
// issuer name and serial) created, with their descendants, and returns how
// many tokens it removed. The node calls it when the CA revokes a
// certificate.
func (s *Service) RevokeCertTokens(ctx context.Context, cert *x509.Certificate) (int, error) {
	if cert == nil || cert.SerialNumber == nil {
		return 0, fmt.Errorf("%w: no certificate", ErrInvalid)
	}
	var hashes [][]byte
	err := s.listAll(ctx, tableCertToks, []byte(certID(cert)+"/"), false, func(kv raftstore.KV) error {
		hashes = append(hashes, kv.Value)
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, h := range hashes {
		m, err := s.revokeTree(ctx, h)
		n += m
		if err != nil {
			return n, err
		}
	}
	if len(hashes) > n { // entries whose tokens are gone (none are expected)
		err = s.listAll(ctx, tableCertToks, []byte(certID(cert)+"/"), true, func(kv raftstore.KV) error {
			return s.store.Delete(ctx, tableCertToks, kv.Key)
		})
	}
	return n, err
}

// mismatch returns why leaf fails the role's name constraints, or "".
func (r *CertRole) mismatch(leaf *x509.Certificate) string {
	if len(r.AllowedCommonNames) > 0 && !anyMatch(r.AllowedCommonNames, []string{leaf.Subject.CommonName}, 0, false) {
		return "common name not allowed"
	}
	if len(r.AllowedDNSNames) > 0 && !anyMatch(r.AllowedDNSNames, leaf.DNSNames, '.', true) {
		return "no allowed DNS name"
	}
	if len(r.AllowedURIs) > 0 {
		uris := make([]string, 0, len(leaf.URIs))
		for _, u := range leaf.URIs {
			uris = append(uris, u.String())
		}
		if !anyMatch(r.AllowedURIs, uris, '/', false) {
			return "no allowed URI"
		}
	}
	return ""
}

// anyMatch reports whether any value matches any pattern.
func anyMatch(patterns, values []string, sep rune, fold bool) bool {
	for i, v := range values {
		if i == maxSANs {
			break
		}
		if v == "" || len(v) > 1024 {
			continue
		}
		if fold {
			v = strings.ToLower(v)
		}
		for _, p := range patterns {
			if fold {
				p = strings.ToLower(p)
			}
			if globMatch(p, v, sep) {
				return true
			}
		}
	}
	return false
}

// certMeta describes the certificate in the token's metadata, keeping only
// values that are valid metadata.
func certMeta(role string, leaf *x509.Certificate) map[string]string {
	m := map[string]string{"role": role, "serial": leaf.SerialNumber.Text(16)}
	add := func(k, v string) {
		if v != "" && checkText(k, v, maxMetaValue) == nil {
			m[k] = v
		}
	}
	add("common_name", leaf.Subject.CommonName)
	if len(leaf.URIs) > 0 {
		add("uri", leaf.URIs[0].String())
	}
	return m
}
