package stepca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/smallstep/certificates/api/render"
	"github.com/smallstep/certificates/authority/provisioner"
	casapi "github.com/smallstep/certificates/cas/apiv1"
	"github.com/smallstep/certificates/errs"
)

// jwkPolicy returns the policy of the stored JWK provisioner named name,
// as it stands now, or nil if there is none of that name.
func (s *Server) jwkPolicy(ctx context.Context, st *provState, name string) (*policy, error) {
	p, ok := st.jwks[name]
	if !ok {
		return nil, nil
	}
	return s.policyOf(ctx, p.policy())
}

// checkJWKIssue is the issuing CAS's check of a certificate a stored JWK
// provisioner authorised: its names, key and lifetime, as at ACME
// finalize. (signGate refused most such requests already, with 403; this
// is the check that cannot be gone around.)
func (s *Server) checkJWKIssue(ctx context.Context, req *casapi.CreateCertificateRequest) error {
	pol, err := s.jwkPolicy(ctx, s.state(), req.Provisioner.Name)
	if err != nil || pol == nil {
		return err
	}
	if err := pol.names(req.Template); err != nil {
		return err
	}
	if err := pol.key(req.Template.PublicKey); err != nil {
		return err
	}
	return pol.lifetime(req.Lifetime)
}

// signRequest is the body of step's /sign, as far as the gate reads it.
type signRequest struct {
	CSR string `json:"csr"`
	OTT string `json:"ott"`
}

// signGate checks step's /sign (and /1.0/sign) against the policy of the
// stored JWK provisioner the token names, before step-ca signs anything:
// a name or key the policy refuses gets 403. The token is not verified
// here (step verifies it after), so the gate can only refuse; a request it
// cannot read goes to step, which refuses it.
func (s *Server) signGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || strings.TrimPrefix(r.URL.Path, "/1.0") != "/sign" {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBodyBytes))
		if err != nil {
			render.Error(w, r, errs.BadRequest("cannot read request body"))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var req signRequest
		if json.Unmarshal(body, &req) != nil {
			next.ServeHTTP(w, r)
			return
		}
		name, ok := tokenIssuer(req.OTT)
		csr := signCSR(req.CSR)
		if !ok || csr == nil {
			next.ServeHTTP(w, r)
			return
		}
		st, err := s.current(r.Context())
		if err != nil {
			render.Error(w, r, errs.Wrap(http.StatusServiceUnavailable, err, "stepca: provisioners"))
			return
		}
		if err := s.checkCSR(r.Context(), st, name, csr); err != nil {
			if refused(err) {
				render.Error(w, r, errs.Forbidden("certificate refused: %v", err))
				return
			}
			render.Error(w, r, errs.Wrap(http.StatusServiceUnavailable, err, "stepca: policy"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkCSR checks a CSR's names and key against the JWK provisioner's
// policy; a name that is no stored JWK provisioner passes.
func (s *Server) checkCSR(ctx context.Context, st *provState, name string, csr *x509.CertificateRequest) error {
	pol, err := s.jwkPolicy(ctx, st, name)
	if err != nil || pol == nil {
		return err
	}
	c := &x509.Certificate{Subject: csr.Subject, DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses,
		URIs: csr.URIs, EmailAddresses: csr.EmailAddresses}
	if err := pol.names(c); err != nil {
		return err
	}
	return pol.key(csr.PublicKey)
}

// tokenIssuer returns the iss claim of a JWT, unverified: for step's JWK
// tokens, the provisioner's name.
func tokenIssuer(tok string) (string, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", false
	}
	var claims struct {
		Issuer string `json:"iss"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.Issuer == "" {
		return "", false
	}
	return claims.Issuer, true
}

// signCSR parses a PEM CSR whose signature verifies, or returns nil.
func signCSR(s string) *x509.CertificateRequest {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		return nil
	}
	return csr
}

// checkJWKRenewal checks a renewal of a certificate a stored JWK
// provisioner issued; ok is false when name is no such provisioner.
func (s *Server) checkJWKRenewal(ctx context.Context, name string, old *x509.Certificate, pub crypto.PublicKey, lifetime time.Duration) (ok bool, err error) {
	pol, err := s.jwkPolicy(ctx, s.state(), name)
	if err != nil {
		return true, err
	}
	if pol == nil {
		return false, nil
	}
	return true, pol.certificate(old, pub, lifetime)
}

// isJWK reports whether a CAS request comes from a JWK provisioner.
func isJWK(p *casapi.ProvisionerInfo) bool {
	return p != nil && p.Type == provisioner.TypeJWK.String()
}
