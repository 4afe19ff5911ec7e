package stepca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
)

// TestACMEWithXCrypto issues over http-01 (a DNS name and an IP address)
// and tls-alpn-01 with golang.org/x/crypto/acme, renews, and revokes both
// with the account key and with the certificate's key.
func TestACMEWithXCrypto(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)

	ids := append(acme.DomainIDs("web.test"), acme.IPIDs("127.0.0.1")...)
	chain, err := e.issue(ctx, c, "http-01", ids)
	if err != nil {
		t.Fatalf("http-01: %v", err)
	}
	e.ca.verify(t, chain)
	leaf := chain[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "web.test" || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if r, ok := e.rec.get(leaf.SerialNumber.String()); !ok || r.source != SourceACME || r.role != "acme" || !r.cert.Equal(leaf) {
		t.Errorf("recorded %+v, %v; want source acme, role acme", r, ok)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 24*time.Hour || d > 24*time.Hour+2*time.Minute {
		t.Errorf("validity %v, want the default 24h (and the backdate)", d)
	}

	alpn, err := e.issue(ctx, c, "tls-alpn-01", acme.DomainIDs("alpn.test"))
	if err != nil {
		t.Fatalf("tls-alpn-01: %v", err)
	}
	e.ca.verify(t, alpn)

	// Renewal over ACME is a new order for the same names.
	renewed, err := e.issue(ctx, c, "http-01", ids)
	if err != nil {
		t.Fatalf("renewal: %v", err)
	}
	e.ca.verify(t, renewed)
	if renewed[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("renewal returned the same certificate")
	}

	// Revocation with the account key.
	if err := c.RevokeCert(ctx, nil, leaf.Raw, acme.CRLReasonKeyCompromise); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if reason, ok := e.rec.revocation(leaf.SerialNumber.String()); !ok || reason != int(acme.CRLReasonKeyCompromise) {
		t.Errorf("revocation recorded %v, %d", ok, reason)
	}
	if revoked, _ := e.srv.Authority().IsRevoked(leaf.SerialNumber.String()); !revoked {
		t.Error("step-ca does not see the revocation")
	}
	// (x/crypto/acme takes alreadyRevoked for success: ask by hand.)
	raw := e.rawClient(t, c)
	dir, _ := c.Discover(ctx)
	resp, body := raw.post(t, dir.RevokeURL, raw.sign(t, dir.RevokeURL, map[string]any{"certificate": b64url(leaf.Raw)}))
	problem(t, resp, body, 400, "alreadyRevoked")

	// Revocation with the certificate's own key, no account.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	order, err := c.AuthorizeOrder(ctx, acme.DomainIDs("own-key.test"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.solve(ctx, c, order, "http-01"); err != nil {
		t.Fatal(err)
	}
	der, _, err := c.CreateOrderCert(ctx, order.FinalizeURL, newCSR(key, acme.DomainIDs("own-key.test")), true)
	if err != nil {
		t.Fatal(err)
	}
	other := &acme.Client{Key: key, DirectoryURL: e.directory(), HTTPClient: e.ts.Client()}
	if err := other.RevokeCert(ctx, key, der[0], acme.CRLReasonSuperseded); err != nil {
		t.Fatalf("revoke with the certificate key: %v", err)
	}
}

// TestACMEConcurrentOrders runs 50 orders of one account at once: none may
// fail on step-ca's "changed since last read" (#340, #1247, #2121).
func TestACMEConcurrentOrders(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("c%d.test", i)
			chain, err := e.issue(ctx, c, "http-01", acme.DomainIDs(name))
			if err == nil && chain[0].DNSNames[0] != name {
				err = fmt.Errorf("certificate for %v", chain[0].DNSNames)
			}
			if err != nil {
				errs <- fmt.Errorf("order %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := e.rec.count(); got != n {
		t.Errorf("%d certificates recorded, want %d", got, n)
	}
	// The account's orders all show, and none is pending.
	orders := e.rawClient(t, c)
	resp, body := orders.post(t, orders.kid+"/orders", orders.sign(t, orders.kid+"/orders", nil))
	if resp.StatusCode != 200 {
		t.Fatalf("orders list: %d %s", resp.StatusCode, body)
	}
}

// TestACMEBadInput: each bad request gets an RFC 8555 problem document and
// nothing is issued.
func TestACMEBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)
	raw := e.rawClient(t, c)
	dir, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ready := func(t *testing.T, names ...string) *acme.Order {
		t.Helper()
		o, err := c.AuthorizeOrder(ctx, acme.DomainIDs(names...))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.solve(ctx, c, o, "http-01"); err != nil {
			t.Fatal(err)
		}
		if o, err = c.WaitOrder(ctx, o.URI); err != nil || o.Status != acme.StatusReady {
			t.Fatalf("order %v, %v", o, err)
		}
		return o
	}
	finalize := func(t *testing.T, o *acme.Order, csr []byte) ([]byte, error) {
		t.Helper()
		body := raw.sign(t, o.FinalizeURL, map[string]string{"csr": b64url(csr)})
		resp, b := raw.post(t, o.FinalizeURL, body)
		if resp.StatusCode >= 400 {
			return b, fmt.Errorf("%d", resp.StatusCode)
		}
		return b, nil
	}

	t.Run("malformed JWS", func(t *testing.T) {
		resp, body := raw.post(t, dir.OrderURL, []byte(`{"protected":"e30","payload":"","signature":"AA"}`))
		problem(t, resp, body, 400, "badSignatureAlgorithm") // {} has no alg
		resp, body = raw.post(t, dir.OrderURL, []byte(`not json`))
		problem(t, resp, body, 400, "malformed")
	})
	t.Run("JWS signed by another key", func(t *testing.T) {
		bad := *raw
		bad.badSig = true
		payload := map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "x.test"}}}
		resp, body := bad.post(t, dir.OrderURL, bad.sign(t, dir.OrderURL, payload))
		problem(t, resp, body, 400, "malformed")
	})
	t.Run("JWS for another URL", func(t *testing.T) {
		payload := map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "x.test"}}}
		resp, body := raw.post(t, dir.OrderURL, raw.sign(t, dir.RegURL, payload))
		problem(t, resp, body, 400, "malformed")
	})
	t.Run("body over the limit", func(t *testing.T) {
		resp, body := raw.post(t, dir.OrderURL, make([]byte, e.cfg.MaxBodyBytes+1))
		problem(t, resp, body, 400, "malformed")
	})
	t.Run("CSR whose signature fails", func(t *testing.T) {
		o := ready(t, "badsig.test")
		csr := newCSR(nil, acme.DomainIDs("badsig.test"))
		csr[len(csr)-5] ^= 0x40 // in the signature
		before := e.rec.count()
		_, err := finalize(t, o, csr)
		if err == nil {
			t.Fatal("finalize accepted a CSR whose signature fails")
		}
		body := raw.sign(t, o.FinalizeURL, map[string]string{"csr": b64url(csr)})
		resp, b := raw.post(t, o.FinalizeURL, body)
		problem(t, resp, b, 400, "malformed")
		if e.rec.count() != before {
			t.Error("a certificate was issued")
		}
		if o2, _ := c.GetOrder(ctx, o.URI); o2.Status != acme.StatusReady {
			t.Errorf("order is %s after a refused finalize", o2.Status)
		}
	})
	t.Run("names not in the order", func(t *testing.T) {
		o := ready(t, "mine.test")
		before := e.rec.count()
		resp, b := raw.post(t, o.FinalizeURL, raw.sign(t, o.FinalizeURL,
			map[string]string{"csr": b64url(newCSR(nil, acme.DomainIDs("mine.test", "theirs.test")))}))
		problem(t, resp, b, 400, "badCSR")
		if e.rec.count() != before {
			t.Error("a certificate was issued")
		}
	})
	t.Run("zero notBefore and notAfter mean not given", func(t *testing.T) {
		resp, b := raw.post(t, dir.OrderURL, raw.sign(t, dir.OrderURL, map[string]any{
			"identifiers": []map[string]string{{"type": "dns", "value": "zero.test"}},
			"notBefore":   time.Time{}, "notAfter": time.Time{},
		}))
		if resp.StatusCode != 201 {
			t.Fatalf("new order with zero times: %d %s", resp.StatusCode, b)
		}
		o, err := c.GetOrder(ctx, resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.solve(ctx, c, o, "http-01"); err != nil {
			t.Fatal(err)
		}
		der, _, err := c.CreateOrderCert(ctx, o.FinalizeURL, newCSR(nil, acme.DomainIDs("zero.test")), true)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der[0])
		if time.Since(leaf.NotBefore) > 5*time.Minute || leaf.NotAfter.Sub(leaf.NotBefore) < 24*time.Hour {
			t.Errorf("validity %v to %v, want from now for the default 24h", leaf.NotBefore, leaf.NotAfter)
		}
	})
	t.Run("finalize answers with the order's Location", func(t *testing.T) {
		o := ready(t, "loc.test")
		resp, b := raw.post(t, o.FinalizeURL, raw.sign(t, o.FinalizeURL,
			map[string]string{"csr": b64url(newCSR(nil, acme.DomainIDs("loc.test")))}))
		if resp.StatusCode != 200 || resp.Header.Get("Location") != o.URI {
			t.Errorf("finalize: %d, Location %q, want %q: %s", resp.StatusCode, resp.Header.Get("Location"), o.URI, b)
		}
	})
	t.Run("challenge that does not validate", func(t *testing.T) {
		o, err := c.AuthorizeOrder(ctx, acme.DomainIDs("unserved.test"))
		if err != nil {
			t.Fatal(err)
		}
		z, _ := c.GetAuthorization(ctx, o.AuthzURLs[0])
		for _, ch := range z.Challenges {
			if ch.Type == "http-01" {
				_, _ = c.Accept(ctx, ch) // nothing serves its token
			}
		}
		z, _ = c.GetAuthorization(ctx, o.AuthzURLs[0])
		if z.Status == acme.StatusValid {
			t.Error("authorization valid without a challenge response")
		}
	})
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// TestEAB: with RequireEAB, an account needs a binding key, and a key binds
// one account only.
func TestEAB(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RequireEAB = true })
	ctx := context.Background()
	k, err := e.srv.CreateEABKey(ctx, "", "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.CreateEABKey(ctx, "", "team-a"); err == nil {
		t.Error("a second key with the same reference")
	}
	newClient := func() *acme.Client {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		// Step answers a spent key with 500 (it empties the HMAC key when
		// binding, then checks for an empty key before checking "bound"),
		// which x/crypto/acme would retry until the context ends.
		return &acme.Client{Key: key, DirectoryURL: e.directory(), HTTPClient: e.ts.Client(),
			RetryBackoff: func(int, *http.Request, *http.Response) time.Duration { return -1 }}
	}
	c := newClient()
	if _, err := c.Register(ctx, &acme.Account{}, acme.AcceptTOS); err == nil {
		t.Fatal("account created without a binding")
	}
	eab := &acme.ExternalAccountBinding{KID: k.KeyID, Key: k.HMACKey}
	if _, err := c.Register(ctx, &acme.Account{ExternalAccountBinding: eab}, acme.AcceptTOS); err != nil {
		t.Fatalf("register with a binding: %v", err)
	}
	chain, err := e.issue(ctx, c, "http-01", acme.DomainIDs("eab.test"))
	if err != nil {
		t.Fatal(err)
	}
	e.ca.verify(t, chain)
	if _, err := newClient().Register(ctx, &acme.Account{ExternalAccountBinding: eab}, acme.AcceptTOS); err == nil {
		t.Error("a binding key bound a second account")
	}
}
