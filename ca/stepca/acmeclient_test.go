package stepca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"

	"golang.org/x/crypto/acme"
)

// newACMEClient registers a new account with golang.org/x/crypto/acme.
func (e *env) newACMEClient(t testing.TB) *acme.Client {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := &acme.Client{Key: key, DirectoryURL: e.directory(), HTTPClient: e.ts.Client()}
	if _, err := c.Register(context.Background(), &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatalf("register: %v", err)
	}
	return c
}

// solve answers every authorization of order with a challenge of type typ
// and waits until each is valid.
func (e *env) solve(ctx context.Context, c *acme.Client, order *acme.Order, typ string) error {
	for _, u := range order.AuthzURLs {
		z, err := c.GetAuthorization(ctx, u)
		if err != nil {
			return err
		}
		if z.Status == acme.StatusValid {
			continue
		}
		var chal *acme.Challenge
		for _, ch := range z.Challenges {
			if ch.Type == typ {
				chal = ch
			}
		}
		if chal == nil {
			return errTestNoChallenge
		}
		switch typ {
		case "http-01":
			ka, err := c.HTTP01ChallengeResponse(chal.Token)
			if err != nil {
				return err
			}
			e.ch.setHTTP(chal.Token, ka)
		case "tls-alpn-01":
			cert, err := c.TLSALPN01ChallengeCert(chal.Token, z.Identifier.Value)
			if err != nil {
				return err
			}
			e.ch.setALPN(z.Identifier.Value, &cert)
		}
		if _, err := c.Accept(ctx, chal); err != nil {
			return err
		}
		if _, err := c.WaitAuthorization(ctx, z.URI); err != nil {
			return err
		}
	}
	return nil
}

const errTestNoChallenge = testError("no challenge of that type")

// issue runs a whole order: identifiers, challenges of type typ, a new P-256
// key and its CSR, finalize, and the chain.
func (e *env) issue(ctx context.Context, c *acme.Client, typ string, ids []acme.AuthzID) ([]*x509.Certificate, error) {
	order, err := c.AuthorizeOrder(ctx, ids)
	if err != nil {
		return nil, err
	}
	if err := e.solve(ctx, c, order, typ); err != nil {
		return nil, err
	}
	if order, err = c.WaitOrder(ctx, order.URI); err != nil {
		return nil, err
	}
	der, _, err := c.CreateOrderCert(ctx, order.FinalizeURL, newCSR(nil, ids), true)
	if err != nil {
		return nil, err
	}
	return parseChain(der)
}

// newCSR makes a CSR for the identifiers with a new P-256 key (or key).
func newCSR(key crypto.Signer, ids []acme.AuthzID) []byte {
	if key == nil {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	tpl := &x509.CertificateRequest{}
	for _, id := range ids {
		switch id.Type {
		case "dns":
			tpl.DNSNames = append(tpl.DNSNames, id.Value)
		case "ip":
			tpl.IPAddresses = append(tpl.IPAddresses, net.ParseIP(id.Value))
		}
	}
	if len(tpl.DNSNames) > 0 {
		tpl.Subject = pkix.Name{CommonName: tpl.DNSNames[0]}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tpl, key)
	if err != nil {
		panic(err)
	}
	return der
}

func parseChain(der [][]byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, b := range der {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// rawClient sends hand-made JWS requests (ES256), for payloads and
// signatures the client libraries will not make.
type rawClient struct {
	hc       *http.Client
	key      *ecdsa.PrivateKey
	kid      string // account URL; empty: the JWK goes in the header
	nonceURL string
	badSig   bool // sign with another key
}

func (e *env) rawClient(t testing.TB, c *acme.Client) *rawClient {
	t.Helper()
	ctx := context.Background()
	acct, err := c.GetReg(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &rawClient{hc: e.ts.Client(), key: c.Key.(*ecdsa.PrivateKey), kid: acct.URI, nonceURL: dir.NonceURL}
}

func (r *rawClient) nonce(t testing.TB) string {
	t.Helper()
	resp, err := r.hc.Head(r.nonceURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Replay-Nonce")
}

// sign returns the flattened JWS of payload for url (nil payload: POST-as-GET).
func (r *rawClient) sign(t testing.TB, url string, payload any) []byte {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	hdr := map[string]any{"alg": "ES256", "nonce": r.nonce(t), "url": url}
	if r.kid != "" {
		hdr["kid"] = r.kid
	} else {
		pub, err := r.key.PublicKey.Bytes() // 0x04 || x || y
		if err != nil {
			t.Fatal(err)
		}
		hdr["jwk"] = map[string]string{"kty": "EC", "crv": "P-256", "x": b64(pub[1:33]), "y": b64(pub[33:])}
	}
	h, _ := json.Marshal(hdr)
	var p []byte
	if payload != nil {
		p, _ = json.Marshal(payload)
	}
	signing := b64(h) + "." + b64(p)
	key := r.key
	if r.badSig {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	sum := sha256.Sum256([]byte(signing))
	rr, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := append(rr.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	body, _ := json.Marshal(map[string]string{"protected": b64(h), "payload": b64(p), "signature": b64(sig)})
	return body
}

func (r *rawClient) post(t testing.TB, url string, body []byte) (*http.Response, []byte) {
	t.Helper()
	resp, err := r.hc.Post(url, "application/jose+json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// problem checks that resp is an RFC 8555 problem document of type typ.
func problem(t testing.TB, resp *http.Response, body []byte, status int, typ string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p struct {
		Type   string `json:"type"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal(body, &p); err != nil || p.Type != "urn:ietf:params:acme:error:"+typ {
		t.Errorf("problem %s (%v), want type %s", body, err, typ)
	}
}

// sameAccount is another client of c's account: its own HTTP connections
// and nonces, the same key and account URL.
func (e *env) sameAccount(c *acme.Client) *acme.Client {
	return &acme.Client{Key: c.Key, KID: c.KID, DirectoryURL: e.directory(), HTTPClient: e.ts.Client()}
}
