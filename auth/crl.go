package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// A certificate role may name the CRL of the CA that issues its clients
// (CertRole.CRLURL). custos fetches it from that URL only, never from a
// URL a certificate carries, reads at most Config.MaxCRLSize bytes of it,
// checks that the issuer of the client certificate signed it, and keeps it
// until its nextUpdate. A login through the role is refused when the
// certificate is listed, and also whenever the CRL cannot be fetched, does
// not parse or verify, or is past its nextUpdate: fail closed.

// errCRL is the category of a CRL that cannot be used.
var errCRL = errors.New("auth: the role's CRL cannot be used")

// crlCache keeps the CRLs of the roles, by URL.
type crlCache struct {
	mu      sync.Mutex
	entries map[string]*roleCRL
}

// roleCRL is one fetched CRL: the serials it lists, who signed it, and
// until when it holds. mu is held while it is fetched, so that a burst of
// logins fetches once.
type roleCRL struct {
	mu         sync.Mutex
	issuer     []byte // RawSubject of the certificate that signed it
	nextUpdate time.Time
	revoked    map[string]struct{}
	failed     error     // the last fetch's error, repeated until retryAt
	retryAt    time.Time // so that failing logins do not each fetch
}

// crlRetry is how long a failed fetch is not tried again.
const crlRetry = 10 * time.Second

func (c *crlCache) entry(u string) *roleCRL {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[string]*roleCRL)
	}
	e := c.entries[u]
	if e == nil {
		e = new(roleCRL)
		c.entries[u] = e
	}
	return e
}

// checkCRLURL accepts an absolute http or https URL without credentials.
func checkCRLURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || len(s) > 1024 {
		return fmt.Errorf("crl_url: want an absolute http or https URL of at most 1024 characters without credentials")
	}
	return nil
}

// revokedByCRL reports whether the role's CRL lists leaf, which issuer
// (from the verified chain) issued.
func (s *Service) revokedByCRL(ctx context.Context, crlURL string, leaf, issuer *x509.Certificate) (bool, error) {
	e := s.crls.entry(crlURL)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := s.now()
	if e.revoked == nil || !now.Before(e.nextUpdate) || string(e.issuer) != string(issuer.RawSubject) {
		if e.failed != nil && now.Before(e.retryAt) {
			return false, e.failed
		}
		err := s.fetchCRL(ctx, crlURL, issuer, e)
		if err == nil && !now.Before(e.nextUpdate) {
			err = fmt.Errorf("%w: the CRL at %s expired at %s", errCRL, crlURL, e.nextUpdate.Format(time.RFC3339))
		}
		if err != nil {
			e.revoked, e.failed, e.retryAt = nil, err, now.Add(crlRetry)
			return false, err
		}
		e.failed = nil
	}
	_, revoked := e.revoked[leaf.SerialNumber.Text(16)]
	return revoked, nil
}

// fetchCRL reads the CRL at crlURL into e.
func (s *Service) fetchCRL(ctx context.Context, crlURL string, issuer *x509.Certificate, e *roleCRL) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CRLTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, crlURL, nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errCRL, err)
	}
	resp, err := s.cfg.CRLClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w: fetch %s: %v", errCRL, crlURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: fetch %s: status %d", errCRL, crlURL, resp.StatusCode)
	}
	der, err := io.ReadAll(io.LimitReader(resp.Body, s.cfg.MaxCRLSize+1))
	if err != nil {
		return fmt.Errorf("%w: fetch %s: %v", errCRL, crlURL, err)
	}
	if int64(len(der)) > s.cfg.MaxCRLSize {
		return fmt.Errorf("%w: the CRL at %s is larger than %d bytes", errCRL, crlURL, s.cfg.MaxCRLSize)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("%w: the CRL at %s does not parse: %v", errCRL, crlURL, err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("%w: the CRL at %s is not signed by the certificate's issuer: %v", errCRL, crlURL, err)
	}
	if crl.NextUpdate.IsZero() {
		return fmt.Errorf("%w: the CRL at %s has no nextUpdate", errCRL, crlURL)
	}
	revoked := make(map[string]struct{}, len(crl.RevokedCertificateEntries))
	for _, r := range crl.RevokedCertificateEntries {
		revoked[r.SerialNumber.Text(16)] = struct{}{}
	}
	e.issuer, e.nextUpdate, e.revoked = issuer.RawSubject, crl.NextUpdate, revoked
	return nil
}
