package stepca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"testing"
	"time"

	"go.step.sm/crypto/jose"
)

// stepCLI does what `step ca certificate` and `step ca renew` do.
type stepCLI struct {
	t    *testing.T
	base string
	hc   *http.Client
	key  *jose.JSONWebKey // the provisioner key, once decrypted
	kid  string
}

func (c *stepCLI) do(method, path string, body any, out any) int {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// token fetches the JWK provisioner's encrypted key, decrypts it with the
// password and signs a one-time token for subject.
func (c *stepCLI) token(prov, password, subject, aud string) string {
	c.t.Helper()
	if c.key == nil {
		c.key, c.kid = c.provisionerKey(prov, password)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: c.key.Key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", c.kid))
	if err != nil {
		c.t.Fatal(err)
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	now := time.Now()
	tok, err := jose.Signed(signer).Claims(jose.Claims{
		Issuer: prov, Subject: subject, Audience: jose.Audience{aud}, ID: hex.EncodeToString(id),
		NotBefore: jose.NewNumericDate(now), IssuedAt: jose.NewNumericDate(now), Expiry: jose.NewNumericDate(now.Add(5 * time.Minute)),
	}).Claims(map[string]any{"sans": []string{subject}}).CompactSerialize()
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

func (c *stepCLI) provisionerKey(prov, password string) (*jose.JSONWebKey, string) {
	c.t.Helper()
	_, kid := c.provisionerKeyID(prov)
	var enc struct{ Key string }
	if st := c.do("GET", "/1.0/provisioners/"+url.PathEscape(kid)+"/encrypted-key", nil, &enc); st != 200 {
		c.t.Fatalf("encrypted key of %q (%q): %d", prov, kid, st)
	}
	raw, err := jose.Decrypt([]byte(enc.Key), jose.WithPassword([]byte(password)))
	if err != nil {
		c.t.Fatal(err)
	}
	var key jose.JSONWebKey
	if err := json.Unmarshal(raw, &key); err != nil {
		c.t.Fatal(err)
	}
	return &key, kid
}

// provisionerKeyID lists the provisioners and returns prov's type and kid.
func (c *stepCLI) provisionerKeyID(prov string) (string, string) {
	c.t.Helper()
	var list struct {
		Provisioners []struct {
			Type, Name string
			Key        *jose.JSONWebKey `json:"key"`
		} `json:"provisioners"`
	}
	if st := c.do("GET", "/provisioners", nil, &list); st != 200 {
		c.t.Fatalf("GET /provisioners: %d", st)
	}
	for _, p := range list.Provisioners {
		if p.Name == prov && p.Key != nil {
			return p.Type, p.Key.KeyID
		}
	}
	c.t.Fatalf("no provisioner %q", prov)
	return "", ""
}

type signResponse struct {
	Crt       string   `json:"crt"`
	CertChain []string `json:"certChain"`
}

func (r signResponse) chain(t *testing.T) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, p := range r.CertChain {
		b, _ := pem.Decode([]byte(p))
		if b == nil {
			t.Fatalf("bad PEM in certChain")
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func csrPEM(t *testing.T, key *ecdsa.PrivateKey, name string) string {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// TestStepAPI signs with the JWK provisioner as the step CLI does, renews
// over mutual TLS, and refuses a client certificate that is not ours.
func TestStepAPI(t *testing.T) {
	e := newEnv(t, withJWK)
	cli := &stepCLI{t: t, base: e.ts.URL, hc: e.ts.Client()}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok := cli.token("custos-jwk", testJWKPassword, "svc.test", e.ts.URL+"/1.0/sign")

	var signed signResponse
	if st := cli.do("POST", "/1.0/sign", map[string]string{"csr": csrPEM(t, key, "svc.test"), "ott": tok}, &signed); st != 201 {
		t.Fatalf("sign: %d", st)
	}
	chain := signed.chain(t)
	e.ca.verify(t, chain)
	if r, ok := e.rec.get(chain[0].SerialNumber.String()); !ok || r.source != SourceStep || r.role != "custos-jwk" {
		t.Errorf("recorded %+v %v; want source step, role custos-jwk", r, ok)
	}
	if st := cli.do("POST", "/sign", map[string]string{"csr": csrPEM(t, key, "svc.test"), "ott": tok}, nil); st != 401 {
		t.Errorf("token used twice: %d, want 401", st)
	}
	if st := cli.do("POST", "/1.0/sign", map[string]string{"csr": csrPEM(t, key, "svc.test"),
		"ott": cli.token("custos-jwk", testJWKPassword, "other.test", e.ts.URL+"/1.0/sign")}, nil); st < 400 {
		t.Errorf("CSR for a name the token does not grant: %d", st)
	}

	mtls := func(certs []*x509.Certificate) *stepCLI {
		tr := e.ts.Client().Transport.(*http.Transport).Clone()
		tc := tls.Certificate{PrivateKey: key}
		for _, c := range certs {
			tc.Certificate = append(tc.Certificate, c.Raw)
		}
		tr.TLSClientConfig.Certificates = []tls.Certificate{tc}
		return &stepCLI{t: t, base: e.ts.URL, hc: &http.Client{Transport: tr}}
	}
	var renewed signResponse
	if st := mtls(chain).do("POST", "/1.0/renew", nil, &renewed); st != 201 {
		t.Fatalf("renew: %d", st)
	}
	rchain := renewed.chain(t)
	e.ca.verify(t, rchain)
	if r, ok := e.rec.get(rchain[0].SerialNumber.String()); !ok || r.source != SourceStep || r.role != "custos-jwk" {
		t.Errorf("renewal recorded %+v %v", r, ok)
	}

	// A certificate with the same names and key, signed by someone else
	// under the intermediate's name.
	fakeIssuer := *chain[1]
	fakeIssuer.PublicKey = &key.PublicKey
	forged := mustCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(99), Subject: chain[0].Subject, DNSNames: chain[0].DNSNames,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
	}, &fakeIssuer, &key.PublicKey, key)
	before := e.rec.count()
	if st := mtls([]*x509.Certificate{forged}).do("POST", "/renew", nil, nil); st < 400 {
		t.Errorf("renewal of a forged certificate: %d", st)
	}
	if e.rec.count() != before {
		t.Error("a forged certificate was renewed")
	}

	// Revoked in custos' inventory, not through step: no renewal.
	_ = e.rec.RecordRevocation(context.Background(), rchain[0].SerialNumber, 1, "")
	if st := mtls(rchain).do("POST", "/renew", nil, nil); st < 400 {
		t.Errorf("renewal of a certificate revoked in the inventory: %d", st)
	}

	// A second node keeps the provisioner's key; a node given the wrong
	// password does not start.
	_, ts2 := e.start(t, e.cfg)
	cli2 := &stepCLI{t: t, base: ts2.URL, hc: ts2.Client()}
	if _, kid2 := cli2.provisionerKeyID("custos-jwk"); kid2 != cli.kid {
		t.Errorf("second node's JWK %q, first's %q", kid2, cli.kid)
	}
	cfg := e.cfg
	cfg.JWKPassword = []byte("not the password")
	if _, err := New(context.Background(), cfg); err == nil {
		t.Fatal("New accepted the wrong JWK password")
	}
}
