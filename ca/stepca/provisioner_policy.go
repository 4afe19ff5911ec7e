package stepca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/kms"
	"github.com/smallstep/certificates/acme"
	"github.com/smallstep/certificates/api/render"
	"github.com/smallstep/certificates/authority/provisioner"
	casapi "github.com/smallstep/certificates/cas/apiv1"
	"go.step.sm/crypto/jose"
)

// policy is an ACME provisioner's policy at one moment: its own and, if it
// names one, its role's as it stands now. Names are matched by package
// ca's one matcher (ca.NamePolicy, ca.Role); step's own x509 policy engine
// is not used.
type policy struct {
	p    ACMEProvisioner
	role *ca.Role
}

// refused reports whether err is a policy's answer (no) rather than a
// failure to find one out.
func refused(err error) bool {
	return errors.Is(err, kms.ErrInvalid) || errors.Is(err, kms.ErrForbidden)
}

// policyOf reads p's role, if it has one. A deleted role refuses all.
func (s *Server) policyOf(ctx context.Context, p ACMEProvisioner) (*policy, error) {
	pol := &policy{p: p}
	if p.Role == "" {
		return pol, nil
	}
	if s.cfg.Roles == nil {
		return nil, fmt.Errorf("%w: ACME provisioner %q names role %q, and this CA has no roles", kms.ErrForbidden, p.Name, p.Role)
	}
	r, err := s.cfg.Roles.ReadRole(ctx, p.Role)
	if errors.Is(err, kms.ErrNotFound) {
		return nil, fmt.Errorf("%w: role %q of ACME provisioner %q no longer exists", kms.ErrForbidden, p.Role, p.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("stepca: role %q: %w", p.Role, err)
	}
	pol.role = &r
	return pol, nil
}

// identifier checks an ACME identifier (type dns or ip).
func (pol *policy) identifier(typ, value string) error {
	switch typ {
	case "dns":
		if err := pol.p.names().CheckDNSName(value); err != nil {
			return err
		}
		if pol.role != nil {
			return pol.role.CheckDNSName(value)
		}
		return nil
	case "ip":
		ip := net.ParseIP(value)
		if ip == nil {
			return fmt.Errorf("%w: %q is not an IP address", kms.ErrInvalid, value)
		}
		if err := pol.p.names().CheckIP(ip); err != nil {
			return err
		}
		if pol.role != nil {
			return pol.role.CheckIP(ip)
		}
		return nil
	}
	return fmt.Errorf("%w: identifier type %q is not supported", kms.ErrInvalid, typ)
}

// names checks every name of a certificate to be issued: its DNS names,
// IP addresses and common name. ACME issues no other kind.
func (pol *policy) names(c *x509.Certificate) error {
	if len(c.URIs)+len(c.EmailAddresses) > 0 {
		return fmt.Errorf("%w: certificates of a provisioner hold DNS names and IP addresses only", kms.ErrInvalid)
	}
	for _, d := range c.DNSNames {
		if err := pol.identifier("dns", d); err != nil {
			return err
		}
	}
	for _, ip := range c.IPAddresses {
		if err := pol.identifier("ip", ip.String()); err != nil {
			return err
		}
	}
	if cn := c.Subject.CommonName; cn != "" {
		typ := "dns"
		if net.ParseIP(cn) != nil {
			typ = "ip"
		}
		return pol.identifier(typ, cn)
	}
	return nil
}

func (pol *policy) key(pub crypto.PublicKey) error {
	if err := ca.CheckKeyType(pub, pol.p.KeyTypes); err != nil {
		return fmt.Errorf("%w (ACME provisioner %q)", err, pol.p.Name)
	}
	if pol.role != nil {
		return pol.role.CheckKey(pub)
	}
	return nil
}

func (pol *policy) lifetime(d time.Duration) error {
	if d > pol.p.MaxLifetime {
		return fmt.Errorf("%w: lifetime %v is over the maximum %v of ACME provisioner %q", kms.ErrInvalid, d, pol.p.MaxLifetime, pol.p.Name)
	}
	if pol.role != nil && d > pol.role.MaxTTL {
		return fmt.Errorf("%w: lifetime %v is over the maximum %v of role %q", kms.ErrInvalid, d, pol.role.MaxTTL, pol.role.Name)
	}
	return nil
}

// certificate checks a whole certificate, for a renewal with key pub.
func (pol *policy) certificate(c *x509.Certificate, pub crypto.PublicKey, lifetime time.Duration) error {
	if err := pol.names(c); err != nil {
		return err
	}
	if err := pol.key(pub); err != nil {
		return err
	}
	return pol.lifetime(lifetime)
}

// checkIssue is the issuing CAS's check at ACME finalize (and, for a
// stored JWK provisioner, at step's /sign: checkJWKIssue): the names
// against the policy as it stands now (rejectedIdentifier), the key type
// (badCSR) and the lifetime (rejectedIdentifier). Other provisioners pass.
func (s *Server) checkIssue(ctx context.Context, req *casapi.CreateCertificateRequest) error {
	if isJWK(req.Provisioner) {
		return s.checkJWKIssue(ctx, req)
	}
	if req.Provisioner == nil || req.Provisioner.Type != provisioner.TypeACME.String() {
		return nil
	}
	p, ok := s.state().provs[req.Provisioner.Name]
	if !ok {
		return acme.NewDetailedError(acme.ErrorUnauthorizedType, "ACME provisioner %q no longer exists", req.Provisioner.Name)
	}
	pol, err := s.policyOf(ctx, p)
	if err != nil {
		if refused(err) {
			return acme.NewDetailedError(acme.ErrorRejectedIdentifierType, "%v", err)
		}
		return err
	}
	if err := pol.names(req.Template); err != nil {
		return acme.NewDetailedError(acme.ErrorRejectedIdentifierType, "%v", err)
	}
	if err := pol.key(req.Template.PublicKey); err != nil {
		return acme.NewDetailedError(acme.ErrorBadCSRType, "%v", err)
	}
	if err := pol.lifetime(req.Lifetime); err != nil {
		return acme.NewDetailedError(acme.ErrorRejectedIdentifierType, "%v", err)
	}
	return nil
}

// newOrder is the payload of a new-order request.
type newOrder struct {
	Identifiers []struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"identifiers"`
}

// orderPolicy checks a new order against its provisioner's policy before
// step-ca sees it, so that a refused name gets rejectedIdentifier at
// new-order (not at finalize) and no authorization is made for it.
//
// The identifiers are read from the JWS payload before its signature is
// checked: an order the policy allows goes on to step-ca, which verifies
// exactly these bytes (once) and refuses them if the signature is bad, so
// nothing is decided on an unverified payload. Only a refusal is
// authenticated first: it is answered only to a request whose JWS verifies
// with the key of an account of that provisioner; anything else goes to
// step-ca, which refuses it, so the policy cannot be probed without an
// account. The body was capped by lockObject.
func (s *Server) orderPolicy(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || path.Base(r.URL.Path) != "new-order" {
			next.ServeHTTP(w, r)
			return
		}
		name, _ := url.PathUnescape(strings.Split(strings.TrimPrefix(r.URL.Path, "/acme/"), "/")[0])
		p, ok := s.state().provs[name]
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			render.Error(w, r, acme.NewDetailedError(acme.ErrorMalformedType, "cannot read request body"))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		jws, err := jose.ParseJWS(string(body))
		if err != nil || len(jws.Signatures) != 1 {
			next.ServeHTTP(w, r)
			return
		}
		var nor newOrder
		if json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &nor) != nil {
			next.ServeHTTP(w, r)
			return
		}
		refusal := s.refuseOrder(r.Context(), p, nor)
		if refusal == nil {
			next.ServeHTTP(w, r)
			return
		}
		if !s.signedByAccount(r.Context(), jws, p) {
			next.ServeHTTP(w, r)
			return
		}
		s.problem(w, r, refusal)
	})
}

// refuseOrder is the problem a new order gets from p's policy as it stands
// now, or nil if the policy allows every identifier.
func (s *Server) refuseOrder(ctx context.Context, p ACMEProvisioner, nor newOrder) *acme.Error {
	pol, err := s.policyOf(ctx, p)
	if err != nil {
		if refused(err) {
			return acme.NewDetailedError(acme.ErrorRejectedIdentifierType, "%v", err)
		}
		return acme.WrapErrorISE(err, "reading the provisioner's policy")
	}
	for _, id := range nor.Identifiers {
		if err := pol.identifier(id.Type, id.Value); err != nil {
			return acme.NewDetailedError(acme.ErrorRejectedIdentifierType, "%v", err)
		}
	}
	return nil
}

// signedByAccount reports whether a JWS with one signature is signed by
// the key of a valid account of provisioner p (its kid). It does not spend
// the nonce: step-ca does.
func (s *Server) signedByAccount(ctx context.Context, jws *jose.JSONWebSignature, p ACMEProvisioner) bool {
	kid := jws.Signatures[0].Protected.KeyID
	if kid == "" {
		return false
	}
	acc, err := s.acmeDB.GetAccount(ctx, path.Base(kid))
	if err != nil || acc == nil || acc.Key == nil || !acc.IsValid() {
		return false
	}
	if acc.ProvisionerID != p.stepID() {
		return false
	}
	_, err = jws.Verify(acc.Key)
	return err == nil
}

// problem sends an RFC 8555 problem document with a fresh nonce, as
// step-ca's own answers carry one.
func (s *Server) problem(w http.ResponseWriter, r *http.Request, e *acme.Error) {
	if n, err := s.acmeDB.CreateNonce(r.Context()); err == nil {
		w.Header().Set("Replay-Nonce", string(n))
	}
	w.Header().Set("Cache-Control", "no-store")
	render.Error(w, r, e)
}
