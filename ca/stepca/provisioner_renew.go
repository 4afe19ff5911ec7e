package stepca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/custos-pki/custos/kms"
	"github.com/smallstep/certificates/api/render"
	"github.com/smallstep/certificates/errs"
)

// lifetimeSlack absorbs the backdating and the truncation to seconds of a
// certificate's validity when its lifetime is compared with a maximum.
const lifetimeSlack = time.Minute

// checkRenewal decides whether old may be renewed (or rekeyed to pub) now:
// it must be recorded, not revoked, and pass the policy that issued it as
// that policy stands now: the REST role, the ACME provisioner (and its
// role), or the step provisioner. A deleted role or provisioner refuses.
// Refusals match kms.ErrForbidden or kms.ErrInvalid.
func (s *Server) checkRenewal(ctx context.Context, old *x509.Certificate, pub crypto.PublicKey) error {
	ot, ok := s.cfg.Recorder.(OriginTeller)
	if !ok {
		return fmt.Errorf("%w: renewals need an inventory that knows where certificates come from", kms.ErrForbidden)
	}
	o, err := ot.Origin(ctx, old.SerialNumber)
	if errors.Is(err, ErrNotRecorded) {
		return fmt.Errorf("%w: certificate %s is not in the inventory", kms.ErrForbidden, old.SerialNumber)
	}
	if err != nil {
		return fmt.Errorf("stepca: origin of %s: %w", old.SerialNumber, err)
	}
	if o.Revoked {
		return fmt.Errorf("%w: certificate %s is revoked", kms.ErrForbidden, old.SerialNumber)
	}
	backdate := time.Minute
	if b := s.state().auth.GetBackdate(); b != nil {
		backdate = *b
	}
	lifetime := max(0, old.NotAfter.Sub(old.NotBefore)-backdate-lifetimeSlack)
	acmeCheck := func(name string) error {
		p, ok := s.state().provs[name]
		if !ok {
			return fmt.Errorf("%w: ACME provisioner %q no longer exists", kms.ErrForbidden, name)
		}
		pol, err := s.policyOf(ctx, p)
		if err != nil {
			return err
		}
		return pol.certificate(old, pub, lifetime)
	}
	switch o.Source {
	case SourceREST:
		if s.cfg.Roles == nil {
			return fmt.Errorf("%w: this CA has no roles", kms.ErrForbidden)
		}
		r, err := s.cfg.Roles.ReadRole(ctx, o.Role)
		if errors.Is(err, kms.ErrNotFound) {
			return fmt.Errorf("%w: role %q no longer exists", kms.ErrForbidden, o.Role)
		}
		if err != nil {
			return fmt.Errorf("stepca: role %q: %w", o.Role, err)
		}
		return r.CheckCertificate(old, pub, lifetime)
	case SourceACME:
		return acmeCheck(o.Role)
	case SourceStep:
		if o.Role != "" && o.Role == s.cfg.JWKProvisioner {
			return nil
		}
		if ok, err := s.checkJWKRenewal(ctx, o.Role, old, pub, lifetime); ok {
			return err
		}
		if _, ok := s.state().provs[o.Role]; ok && o.Role != "" {
			return acmeCheck(o.Role) // recorded before renewals kept their origin
		}
	}
	return fmt.Errorf("%w: no policy of this CA issued certificate %s (%s %q)", kms.ErrForbidden, old.SerialNumber, o.Source, o.Role)
}

// renewalGate checks step's /renew and /rekey (and their /1.0 forms)
// before step-ca signs anything: the certificate renewed is the verified
// TLS peer's, or the one in a renewal token's x5c header (step verifies
// the token after; this check can only refuse); a rekey's new key is read
// from its CSR. The authority database checks again when the renewal is
// stored.
func (s *Server) renewalGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/1.0")
		if r.Method != http.MethodPost || p != "/renew" && p != "/rekey" {
			next.ServeHTTP(w, r)
			return
		}
		var old *x509.Certificate
		switch {
		case r.TLS != nil && len(r.TLS.PeerCertificates) > 0:
			old = r.TLS.PeerCertificates[0]
		case p == "/renew" && strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "):
			c, err := tokenCertificate(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
			if err != nil {
				render.Error(w, r, errs.Unauthorized("renewal token: %v", err))
				return
			}
			old = c
		default:
			next.ServeHTTP(w, r) // step answers: no certificate
			return
		}
		pub := old.PublicKey
		if p == "/rekey" {
			body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxBodyBytes))
			if err != nil {
				render.Error(w, r, errs.BadRequest("cannot read request body"))
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if pub = rekeyPublicKey(body); pub == nil {
				next.ServeHTTP(w, r) // step refuses what it cannot read
				return
			}
		}
		if err := s.checkRenewal(r.Context(), old, pub); err != nil {
			if refused(err) {
				render.Error(w, r, errs.Forbidden("renewal refused: %v", err))
				return
			}
			render.Error(w, r, errs.Wrap(http.StatusServiceUnavailable, err, "renewal"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// tokenCertificate returns the leaf of a JWT's x5c header, unverified.
func tokenCertificate(tok string) (*x509.Certificate, error) {
	h, _, ok := strings.Cut(tok, ".")
	if !ok {
		return nil, errors.New("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(h, "="))
	if err != nil {
		return nil, errors.New("malformed header")
	}
	var hdr struct {
		X5C []string `json:"x5c"`
	}
	if err := json.Unmarshal(raw, &hdr); err != nil || len(hdr.X5C) == 0 {
		return nil, errors.New("no x5c header")
	}
	der, err := base64.StdEncoding.DecodeString(hdr.X5C[0])
	if err != nil {
		return nil, errors.New("malformed x5c header")
	}
	return x509.ParseCertificate(der)
}

// rekeyPublicKey returns the key of a rekey request's CSR, or nil.
func rekeyPublicKey(body []byte) crypto.PublicKey {
	var req struct {
		CSR string `json:"csr"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil
	}
	b, _ := pem.Decode([]byte(req.CSR))
	if b == nil {
		return nil
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		return nil
	}
	return csr.PublicKey
}
