package api

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-pki/custos/ca"
	"golang.org/x/crypto/ocsp"
)

// caFixture is a test stack with a CA, not initialized, served over
// plain HTTP for openssl ocsp -url.
type caFixture struct{ *testStack }

func newCAFixture(t *testing.T) *caFixture {
	t.Helper()
	return &caFixture{newTestStack(t, stackOptions{plainHTTP: true, withCA: true})}
}

// ok sends a request that must succeed.
func (f *caFixture) ok(t *testing.T, method, path string, body, out any) []byte {
	t.Helper()
	st, raw := f.call(t, f.root, method, path, body, out)
	if st != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, st, raw)
	}
	return raw
}

// fails sends a request that must fail with status and code.
func (f *caFixture) fails(t *testing.T, method, path string, body any, status int, code string) {
	t.Helper()
	st, raw := f.call(t, f.root, method, path, body, nil)
	if st != status || !strings.Contains(string(raw), `"code":"`+code+`"`) {
		t.Fatalf("%s %s: %d %s, want %d %s", method, path, st, raw, status, code)
	}
}

func caParsePEM(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return out
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func TestCARoutes(t *testing.T) {
	f := newCAFixture(t)
	f.fails(t, "GET", "/v1/ca/roots", nil, http.StatusNotFound, CodeNotFound) // not initialized
	if st, _ := f.call(t, "", "POST", "/v1/ca/init", "{}", nil); st != http.StatusUnauthorized {
		t.Fatalf("init without a token: %d", st)
	}
	var initResp CAChainResponse
	f.ok(t, "POST", "/v1/ca/init", CAInitRequest{CommonName: "Test"}, &initResp)
	f.fails(t, "POST", "/v1/ca/init", "{}", http.StatusConflict, CodeConflict)

	// Public: roots and chain, PEM and DER, without a token.
	_, raw := f.call(t, "", "GET", "/v1/ca/roots", nil, nil)
	roots := caParsePEM(t, raw)
	if len(roots) != 1 || roots[0].Subject.CommonName != "Test Root" {
		t.Fatalf("roots: %s", raw)
	}
	if _, raw := f.call(t, "", "GET", "/v1/ca/roots?format=der", nil, nil); !bytes.Equal(raw, roots[0].Raw) {
		t.Fatal("roots in DER differ")
	}
	_, raw = f.call(t, "", "GET", "/v1/ca/chain", nil, nil)
	chain := caParsePEM(t, raw)
	_, der := f.call(t, "", "GET", "/v1/ca/chain?format=der", nil, nil)
	if dchain, err := x509.ParseCertificates(der); err != nil || len(chain) != 2 || len(dchain) != 2 || !dchain[0].Equal(chain[0]) {
		t.Fatalf("chain: %d PEM, DER %v", len(chain), err)
	}
	f.fails(t, "GET", "/v1/ca/chain?format=xml", nil, http.StatusBadRequest, CodeInvalidArgument)

	// Roles.
	var role CARole
	f.ok(t, "PUT", "/v1/ca/roles/web", map[string]any{
		"allowed_domains": []string{"example.com"}, "allow_subdomains": true, "max_ttl": "72h",
		"allowed_ip_ranges": []string{"10.0.0.0/8"}, "allowed_uri_sans": []string{"spiffe://example.org/ns/*/sa/*"},
	}, &role)
	if role.Name != "web" || role.MaxTTL != "72h0m0s" || role.TTL != "24h0m0s" || !*role.ServerFlag || !*role.ClientFlag {
		t.Fatalf("role: %+v", role)
	}
	var list ListResponse
	f.ok(t, "GET", "/v1/ca/roles", nil, &list)
	if len(list.Keys) != 1 || list.Keys[0] != "web" {
		t.Fatalf("roles: %v", list.Keys)
	}
	f.fails(t, "PUT", "/v1/ca/roles/bad", map[string]any{"ttl": "soon"}, http.StatusBadRequest, CodeInvalidArgument)
	f.fails(t, "PUT", "/v1/ca/roles/bad", map[string]any{"min_rsa_bits": 1024}, http.StatusBadRequest, CodeInvalidArgument)
	f.fails(t, "PUT", "/v1/ca/roles/bad", map[string]any{"colour": "red"}, http.StatusBadRequest, CodeUnknownField)
	f.fails(t, "GET", "/v1/ca/roles/nope", nil, http.StatusNotFound, CodeNotFound)

	// Sign and issue.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr := func(cn string) string {
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	var signed CACertificateResponse
	f.ok(t, "POST", "/v1/ca/sign/web", CASignRequest{CSR: csr("www.example.com"), TTL: "1h"}, &signed)
	leaf := caParsePEM(t, []byte(signed.Certificate))[0]
	if leaf.Subject.CommonName != "www.example.com" || len(signed.Chain) != 2 || signed.PrivateKey != "" {
		t.Fatalf("signed: %+v", signed)
	}
	f.fails(t, "POST", "/v1/ca/sign/web", CASignRequest{CSR: csr("www.example.com"), TTL: "73h"}, http.StatusBadRequest, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/ca/sign/web", CASignRequest{CSR: csr("evil.com")}, http.StatusBadRequest, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/ca/sign/web", CASignRequest{CSR: "junk"}, http.StatusBadRequest, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/ca/sign/nope", CASignRequest{CSR: csr("www.example.com")}, http.StatusNotFound, CodeNotFound)
	var issued CACertificateResponse
	f.ok(t, "POST", "/v1/ca/issue/web", CAIssueRequest{CommonName: "api.example.com", IPAddresses: []string{"10.1.1.1"},
		URISANs: []string{"spiffe://example.org/ns/a/sa/b"}, KeyType: "rsa-2048"}, &issued)
	if block, _ := pem.Decode([]byte(issued.PrivateKey)); block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("issue returned no private key")
	}
	f.fails(t, "POST", "/v1/ca/issue/web", CAIssueRequest{CommonName: "api.example.com", IPAddresses: []string{"not-an-ip"}}, http.StatusBadRequest, CodeInvalidArgument)

	// Inventory.
	var certs CACertList
	f.ok(t, "GET", "/v1/ca/certs?expiring=72h&role=web", nil, &certs)
	if len(certs.Certs) != 2 {
		t.Fatalf("certs: %+v", certs)
	}
	f.ok(t, "GET", "/v1/ca/certs?san=10.1.1.1", nil, &certs)
	if len(certs.Certs) != 1 || certs.Certs[0].Serial != issued.Serial || certs.Certs[0].Source != "rest" {
		t.Fatalf("certs by SAN: %+v", certs)
	}
	f.fails(t, "GET", "/v1/ca/certs?expiring=soon", nil, http.StatusBadRequest, CodeInvalidArgument)
	var one CACert
	f.ok(t, "GET", "/v1/ca/certs/"+signed.Serial, nil, &one)
	if one.Status != ca.StatusValid || !strings.Contains(one.Certificate, "BEGIN CERTIFICATE") {
		t.Fatalf("cert: %+v", one)
	}

	// Revocation, CRL and OCSP.
	f.ok(t, "POST", "/v1/ca/revoke", CARevokeRequest{Serial: signed.Serial, Reason: 1}, &one)
	if one.Status != ca.StatusRevoked {
		t.Fatalf("revoked: %+v", one)
	}
	f.fails(t, "POST", "/v1/ca/revoke", CARevokeRequest{Serial: signed.Serial, Reason: 1}, http.StatusConflict, CodeConflict)
	_, crlDER := f.call(t, "", "GET", "/v1/ca/crl", nil, nil)
	crl, err := x509.ParseRevocationList(crlDER)
	if err != nil || crl.CheckSignatureFrom(chain[0]) != nil || len(crl.RevokedCertificateEntries) != 1 ||
		crl.RevokedCertificateEntries[0].SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("CRL: %v", err)
	}
	if _, p := f.call(t, "", "GET", "/v1/ca/crl?format=pem", nil, nil); !strings.HasPrefix(string(p), "-----BEGIN X509 CRL-----") {
		t.Fatalf("CRL PEM: %s", p)
	}
	if _, p := f.call(t, "", "GET", "/v1/ca/crl/int-1", nil, nil); !bytes.Equal(p, crlDER) {
		t.Fatal("CRL by issuer differs")
	}
	ocspReq, err := ocsp.CreateRequest(leaf, chain[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", f.url+"/v1/ca/ocsp", bytes.NewReader(ocspReq))
	req.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if r, err := ocsp.ParseResponseForCert(body, leaf, chain[0]); err != nil || r.Status != ocsp.Revoked || resp.Header.Get("Content-Type") != "application/ocsp-response" {
		t.Fatalf("OCSP POST: %v %v", r, err)
	}
	for _, path := range []string{base64.StdEncoding.EncodeToString(ocspReq), url.PathEscape(base64.StdEncoding.EncodeToString(ocspReq))} {
		_, body := f.call(t, "", "GET", "/v1/ca/ocsp/"+path, nil, nil)
		if r, err := ocsp.ParseResponseForCert(body, leaf, chain[0]); err != nil || r.Status != ocsp.Revoked {
			t.Fatalf("OCSP GET %s: %v %v", path, r, err)
		}
	}
	if _, body := f.call(t, "", "GET", "/v1/ca/ocsp/!!!", nil, nil); !bytes.Equal(body, ocsp.MalformedRequestErrorResponse) {
		t.Fatalf("malformed OCSP GET: %x", body)
	}
	goodLeaf := caParsePEM(t, []byte(issued.Certificate))[0]
	caOpenSSLOCSP(t, f.url+"/v1/ca/ocsp", chain, leaf, "revoked")
	caOpenSSLOCSP(t, f.url+"/v1/ca/ocsp", chain, goodLeaf, "good")

	// Intermediates.
	var csrResp CACSRResponse
	f.ok(t, "POST", "/v1/ca/intermediate/csr", nil, &csrResp)
	if !strings.Contains(csrResp.CSR, "BEGIN CERTIFICATE REQUEST") {
		t.Fatalf("intermediate CSR: %q", csrResp.CSR)
	}
	f.fails(t, "POST", "/v1/ca/intermediate/set", CASetIntermediateRequest{Certificate: initResp.Chain[0]}, http.StatusBadRequest, CodeInvalidArgument)
	var rotated CAChainResponse
	f.ok(t, "POST", "/v1/ca/intermediate/rotate", nil, &rotated)
	_, raw = f.call(t, "", "GET", "/v1/ca/chain", nil, nil)
	if now := caParsePEM(t, raw); now[0].Equal(chain[0]) || rotated.Chain[0] != string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: now[0].Raw})) {
		t.Fatal("the chain did not change after a rotation")
	}
	if st, raw := f.call(t, f.root, "DELETE", "/v1/ca/roles/web", nil, nil); st != http.StatusNoContent {
		t.Fatalf("delete: %d %s", st, raw)
	}
	f.fails(t, "DELETE", "/v1/ca/roles/web", nil, http.StatusNotFound, CodeNotFound)
}

// caOpenSSLOCSP asks the responder at url about leaf with openssl ocsp and
// expects status ("good", "revoked") and a verified response.
func caOpenSSLOCSP(t *testing.T, url string, chain []*x509.Certificate, leaf *x509.Certificate, status string) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	write := func(name string, c *x509.Certificate) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("root.pem", chain[1])
	write("int.pem", chain[0])
	write("leaf.pem", leaf)
	cmd := exec.Command(bin, "ocsp", "-issuer", "int.pem", "-cert", "leaf.pem", "-url", url, "-CAfile", "root.pem")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Response verify OK") || !strings.Contains(string(out), "leaf.pem: "+status) {
		t.Fatalf("openssl ocsp: %v\n%s", err, out)
	}
}

// Every CA route but roots, chain, issuer certificates, CRL and OCSP needs
// a token.
func TestCARoutesNeedTokens(t *testing.T) {
	f := newCAFixture(t)
	public := map[string]bool{"/v1/ca/roots": true, "/v1/ca/chain": true, "/v1/ca/crl": true, "/v1/ca/crl/{issuer}": true, "/v1/ca/ocsp": true, "/v1/ca/ocsp/*": true, "/v1/ca/issuer/{issuer}": true}
	n := 0
	for _, rt := range f.server.Routes() {
		if !strings.HasPrefix(rt.Pattern, "/v1/ca/") {
			continue
		}
		n++
		if rt.Public != public[rt.Pattern] {
			t.Errorf("%s %s: public %t", rt.Method, rt.Pattern, rt.Public)
		}
		if rt.Public {
			continue
		}
		path := strings.NewReplacer("{name}", "web", "{role}", "web", "{serial}", "0a", "{id}", "00").Replace(rt.Pattern)
		if st, raw := f.call(t, "", rt.Method, path, "{}", nil); st != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %d %s", rt.Method, path, st, raw)
		}
	}
	if n != 35 { // 21 of package ca, the ACME EAB route, 5 of ACME provisioners, 4 of the workload entries and 4 of step's JWK provisioners
		t.Fatalf("%d CA routes", n)
	}
}
