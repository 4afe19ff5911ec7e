package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/ocsp"
)

// issuedEveryWay is a one-node cluster with a plain-HTTP PKI listener and
// a certificate from each issuance path, each with its issuer.
type issuedEveryWay struct {
	tc     *testCluster
	n      *Node
	certs  map[string]*x509.Certificate // "rest", "acme", "step-renew"
	issuer *x509.Certificate
	rest   api.CACertificateResponse // with its private key
}

func issueEveryWay(t *testing.T) *issuedEveryWay {
	t.Helper()
	h := newHTTP01(t)
	tc := newTestClusterWith(t, 1, func(c *Config) {
		c.ACMEHTTP01Port = h.port
		c.APIHosts = []string{lbHost}
		c.PKIHTTPAddr = freeAddr(t)
	})
	n := tc.nodes[0]
	e := &issuedEveryWay{tc: tc, n: n, certs: map[string]*x509.Certificate{}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// REST.
	c := newClient(t, n, tc.caFile)
	c.token = tc.root
	c.must("PUT", "/v1/ca/roles/web", map[string]any{"allowed_domains": []string{"example.com"}, "allow_subdomains": true}, nil)
	var rest api.CACertificateResponse
	c.must("POST", "/v1/ca/issue/web", api.CAIssueRequest{CommonName: "www.example.com", TTL: "1h"}, &rest)
	e.certs["rest"] = parsePEMCert(t, rest.Certificate)
	e.issuer = parsePEMCert(t, rest.Chain[0])

	// ACME, with golang.org/x/crypto/acme.
	l := &lb{nodes: tc.nodes}
	l.route(0)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	a := acmeClient(t, tc, l, key)
	if _, err := a.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatal(err)
	}
	der, err := issueVia(ctx, h, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.certs["acme"], err = x509.ParseCertificate(der[0]); err != nil {
		t.Fatal(err)
	}

	// step's /renew over mutual TLS, as `step ca renew` does, of the REST
	// certificate.
	e.rest = rest
	e.certs["step-renew"] = e.renew(t)
	if e.certs["step-renew"].SerialNumber.Cmp(e.certs["rest"].SerialNumber) == 0 {
		t.Fatal("the renewal has the serial of the certificate it renews")
	}
	for name, cert := range e.certs {
		if err := cert.CheckSignatureFrom(e.issuer); err != nil {
			t.Fatalf("%s certificate: %v", name, err)
		}
	}
	return e
}

// renew renews the REST certificate through step's /renew over mutual TLS,
// as `step ca renew` does.
func (e *issuedEveryWay) renew(t *testing.T) *x509.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair([]byte(e.rest.Certificate+strings.Join(e.rest.Chain, "")), []byte(e.rest.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	pemCA, _ := os.ReadFile(e.tc.caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
	}}
	resp, err := hc.Post(e.n.APIURL()+"/1.0/renew", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("renew: %d %s", resp.StatusCode, body)
	}
	var renewed struct {
		Crt string `json:"crt"`
	}
	if err := json.Unmarshal(body, &renewed); err != nil {
		t.Fatal(err)
	}
	return parsePEMCert(t, renewed.Crt)
}

func parsePEMCert(t testing.TB, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM in %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Certificates from ACME and from step's renewal point at the same OCSP
// responder, issuer certificate and CRL as REST ones: the plain-HTTP
// listener's.
func TestEveryPathCarriesTheSameAIAAndCDP(t *testing.T) {
	e := issueEveryWay(t)
	base := e.n.PKIURL()
	if base == "" {
		t.Fatal("no PKI listener")
	}
	want := [3][]string{{base + "/v1/ca/ocsp"}, {base + "/v1/ca/issuer/int-1"}, {base + "/v1/ca/crl/int-1"}}
	for _, name := range []string{"rest", "acme", "step-renew"} {
		c := e.certs[name]
		got := [3][]string{c.OCSPServer, c.IssuingCertificateURL, c.CRLDistributionPoints}
		if !slices.EqualFunc(got[:], want[:], slices.Equal) {
			t.Errorf("%s certificate: OCSP, CA issuers, CRL %q, want %q", name, got, want)
		}
	}

	// After a rotation, a renewal of a certificate of the old intermediate
	// points at the new one, not at what the old certificate said.
	c := newClient(t, e.n, e.tc.caFile)
	c.token = e.tc.root
	var rotated api.CAChainResponse
	c.must("POST", "/v1/ca/intermediate/rotate", nil, &rotated)
	newIssuer := parsePEMCert(t, rotated.Chain[0])
	var r *x509.Certificate
	waitFor(t, 30*time.Second, func() bool { // the node's issuer cache
		r = e.renew(t)
		return r.CheckSignatureFrom(newIssuer) == nil
	})
	got := [3][]string{r.OCSPServer, r.IssuingCertificateURL, r.CRLDistributionPoints}
	want = [3][]string{{base + "/v1/ca/ocsp"}, {base + "/v1/ca/issuer/int-2"}, {base + "/v1/ca/crl/int-2"}}
	if !slices.EqualFunc(got[:], want[:], slices.Equal) {
		t.Errorf("renewal after a rotation: OCSP, CA issuers, CRL %q, want %q", got, want)
	}
}

// The plain-HTTP listener serves, at the URLs in the certificates, the
// issuer certificate, the CRL and OCSP (GET and POST), and nothing else.
func TestPKIListenerServesOnlyPKI(t *testing.T) {
	e := issueEveryWay(t)
	hc := &http.Client{Timeout: 30 * time.Second}
	fetch := func(method, u, ctype string, body []byte) []byte {
		t.Helper()
		if !strings.HasPrefix(u, "http://") {
			t.Fatalf("%s is not a plain http URL", u)
		}
		req, _ := http.NewRequest(method, u, bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s", method, u, resp.StatusCode, raw)
		}
		return raw
	}
	for name, leaf := range e.certs {
		t.Run(name, func(t *testing.T) {
			if len(leaf.OCSPServer) == 0 || len(leaf.IssuingCertificateURL) == 0 || len(leaf.CRLDistributionPoints) == 0 {
				t.Fatalf("OCSP %q, CA issuers %q, CRL %q", leaf.OCSPServer, leaf.IssuingCertificateURL, leaf.CRLDistributionPoints)
			}
			iss, err := x509.ParseCertificate(fetch("GET", leaf.IssuingCertificateURL[0], "", nil))
			if err != nil || !bytes.Equal(iss.Raw, e.issuer.Raw) {
				t.Fatalf("caIssuers: %v; the issuer: %v", err, err == nil && bytes.Equal(iss.Raw, e.issuer.Raw))
			}
			crl, err := x509.ParseRevocationList(fetch("GET", leaf.CRLDistributionPoints[0], "", nil))
			if err != nil {
				t.Fatal(err)
			}
			if err := crl.CheckSignatureFrom(iss); err != nil {
				t.Fatalf("CRL signature: %v", err)
			}
			req, err := ocsp.CreateRequest(leaf, iss, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, raw := range [][]byte{
				fetch("POST", leaf.OCSPServer[0], "application/ocsp-request", req),
				fetch("GET", leaf.OCSPServer[0]+"/"+url.PathEscape(base64.StdEncoding.EncodeToString(req)), "", nil),
			} {
				r, err := ocsp.ParseResponseForCert(raw, leaf, iss)
				if err != nil {
					t.Fatal(err)
				}
				if r.Status != ocsp.Good {
					t.Fatalf("OCSP status %d, want good", r.Status)
				}
			}
		})
	}

	// A revocation shows at the same URLs.
	leaf := e.certs["acme"]
	if len(leaf.OCSPServer) == 0 || len(leaf.CRLDistributionPoints) == 0 {
		t.Fatalf("ACME certificate: OCSP %q, CRL %q", leaf.OCSPServer, leaf.CRLDistributionPoints)
	}
	c := newClient(t, e.n, e.tc.caFile)
	c.token = e.tc.root
	c.must("POST", "/v1/ca/revoke", api.CARevokeRequest{Serial: hex.EncodeToString(leaf.SerialNumber.Bytes()), Reason: 1}, nil)
	req, _ := ocsp.CreateRequest(leaf, e.issuer, nil)
	r, err := ocsp.ParseResponseForCert(fetch("POST", leaf.OCSPServer[0], "application/ocsp-request", req), leaf, e.issuer)
	if err != nil || r.Status != ocsp.Revoked {
		t.Fatalf("OCSP after revocation: %v, status %v", err, r)
	}
	crl, err := x509.ParseRevocationList(fetch("GET", leaf.CRLDistributionPoints[0], "", nil))
	if err != nil || !slices.ContainsFunc(crl.RevokedCertificateEntries, func(rc x509.RevocationListEntry) bool {
		return rc.SerialNumber.Cmp(leaf.SerialNumber) == 0
	}) {
		t.Fatalf("the CRL does not list the revoked certificate (%v)", err)
	}

	// Roots and chain are served; nothing else is, with or without a token.
	base := e.n.PKIURL()
	fetch("GET", base+"/v1/ca/roots", "", nil)
	fetch("GET", base+"/v1/ca/chain", "", nil)
	for _, p := range []struct{ method, path string }{
		{"GET", "/v1/sys/health"}, {"GET", "/v1/sys/seal-status"}, {"GET", "/v1/sys/metrics"},
		{"GET", "/v1/ca/roles"}, {"POST", "/v1/ca/issue/web"}, {"POST", "/v1/ca/init"}, {"POST", "/v1/ca/revoke"},
		{"GET", "/v1/ca/certs"}, {"POST", "/v1/sys/unseal"}, {"GET", "/acme/acme/directory"},
		{"GET", "/1.0/provisioners"}, {"POST", "/1.0/sign"}, {"POST", "/renew"}, {"GET", "/roots.pem"},
		{"GET", "/"}, {"GET", "/v1/ca/issuer/int-1/../../sys/health"},
	} {
		req, _ := http.NewRequest(p.method, base+p.path, strings.NewReader("{}"))
		req.Header.Set(api.TokenHeader, e.tc.root)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s on the PKI listener: %d, want 404", p.method, p.path, resp.StatusCode)
		}
	}
	for _, p := range []string{"/v1/ca/issuer/int-9", "/v1/ca/issuer/nope"} {
		resp, err := hc.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}

	// Bodies are capped.
	resp, err := hc.Post(base+"/v1/ca/ocsp", "application/ocsp-request", bytes.NewReader(make([]byte, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a 1 MiB OCSP request: %d, want 413", resp.StatusCode)
	}
}

// zlint, with the lints package ca runs for a private CA, finds no error
// and no warning in a certificate from any path, in the issuers, nor in
// the CRL.
func TestZlintEveryPath(t *testing.T) {
	e := issueEveryWay(t)
	svc, err := e.n.Services()
	if err != nil {
		t.Fatal(err)
	}
	roots, err := svc.CA.Roots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range e.certs {
		// What the lints of AIA and CRL distribution points look at.
		if len(cert.OCSPServer) == 0 || len(cert.IssuingCertificateURL) == 0 || len(cert.CRLDistributionPoints) == 0 {
			t.Errorf("%s certificate: OCSP %q, CA issuers %q, CRL %q", name, cert.OCSPServer, cert.IssuingCertificateURL, cert.CRLDistributionPoints)
		}
	}
	e.certs["intermediate"], e.certs["root"] = e.issuer, roots[0]
	for name, cert := range e.certs {
		f, err := svc.CA.LintFindings(cert)
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Errors)+len(f.Warnings) > 0 {
			t.Errorf("%s certificate: errors %q, warnings %q", name, f.Errors, f.Warnings)
		}
	}
	crl, err := svc.CA.CRL(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f, err := svc.CA.LintCRLFindings(crl)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Errors)+len(f.Warnings) > 0 {
		t.Errorf("CRL: errors %q, warnings %q", f.Errors, f.Warnings)
	}
}

func TestConfigPKIFields(t *testing.T) {
	for _, tc := range []struct {
		name     string
		edit     func(*Config)
		wantErr  string
		wantBase string
	}{
		{"none", func(*Config) {}, "", "https://10.0.0.1:8443"},
		{"listener host", func(c *Config) { c.PKIHTTPAddr = "10.0.0.2:8080" }, "", "http://10.0.0.2:8080"},
		{"listener on every address", func(c *Config) { c.PKIHTTPAddr = ":8080" }, "", "http://10.0.0.1:8080"},
		{"explicit base", func(c *Config) { c.PKIHTTPAddr, c.PKIURLBase = ":8080", "http://pki.example.com/" }, "", "http://pki.example.com"},
		{"bad listen address", func(c *Config) { c.PKIHTTPAddr = "8080" }, "pki_http_addr", ""},
		{"no host anywhere", func(c *Config) { c.PKIHTTPAddr, c.APIAdvertise = "0.0.0.0:8080", "0.0.0.0:8443" }, "pki_url_base is required", ""},
		{"ftp base", func(c *Config) { c.PKIURLBase = "ftp://pki.example.com" }, "pki_url_base", ""},
		{"base with a query", func(c *Config) { c.PKIURLBase = "http://pki.example.com/?a=b" }, "pki_url_base", ""},
		{"base without a host", func(c *Config) { c.PKIURLBase = "http://:80" }, "pki_url_base", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NodeID, cfg.DataDir, cfg.APIAdvertise = "n1", t.TempDir(), "10.0.0.1:8443"
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate() = %v, want an error naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			n := &Node{cfg: cfg}
			if cfg.PKIHTTPAddr != "" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				n.pkiLn = ln
				_, port, _ := net.SplitHostPort(ln.Addr().String())
				tc.wantBase = strings.Replace(tc.wantBase, ":8080", ":"+port, 1)
			}
			if got := n.pkiURLBase(); got != tc.wantBase {
				t.Fatalf("URL base %q, want %q", got, tc.wantBase)
			}
		})
	}
}
