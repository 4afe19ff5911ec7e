package api

import (
	"bytes"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The PKI handler serves the public CA routes, the issuer certificate in
// DER, and nothing else: every other route of the API is 404 there, with a
// token or without.
func TestPKIHandlerServesOnlyPKI(t *testing.T) {
	f := newCAFixture(t)
	var initResp CAChainResponse
	f.ok(t, "POST", "/v1/ca/init", CAInitRequest{CommonName: "Test"}, &initResp)
	pki := httptest.NewServer(f.server.PKIHandler())
	t.Cleanup(pki.Close)
	get := func(method, path, tok string, body []byte) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, pki.URL+path, bytes.NewReader(body))
		if tok != "" {
			req.Header.Set(TokenHeader, tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, raw
	}

	served := map[string]bool{}
	for _, rt := range f.server.pkiRoutes() {
		served[rt.method+" "+rt.pattern] = true
		if !rt.public {
			t.Errorf("PKI route %s %s is not public", rt.method, rt.pattern)
		}
	}
	n := 0
	for _, rt := range f.server.Routes() {
		if served[rt.Method+" "+rt.Pattern] {
			n++
			continue
		}
		path := strings.NewReplacer("{name}", "web", "{role}", "web", "{serial}", "0a", "{issuer}", "int-1", "*", "x").Replace(rt.Pattern)
		if st, _, raw := get(rt.Method, path, f.root, []byte("{}")); st != http.StatusNotFound {
			t.Errorf("%s %s on the PKI handler: %d %s, want 404", rt.Method, path, st, raw)
		}
	}
	if n != len(served) {
		t.Fatalf("%d of the %d PKI routes are API routes", n, len(served))
	}
	for _, p := range []string{"/acme/acme/directory", "/1.0/sign", "/roots.pem", "/", "/v1/ca/issuer/int-1/x"} {
		if st, _, raw := get("GET", p, "", nil); st != http.StatusNotFound {
			t.Errorf("GET %s on the PKI handler: %d %s", p, st, raw)
		}
	}

	st, h, raw := get("GET", "/v1/ca/issuer/int-1", "", nil)
	if st != http.StatusOK || h.Get("Content-Type") != "application/pkix-cert" {
		t.Fatalf("issuer certificate: %d %s", st, h.Get("Content-Type"))
	}
	inter := caParsePEM(t, []byte(initResp.Chain[0]))[0]
	if c, err := x509.ParseCertificate(raw); err != nil || !c.Equal(inter) {
		t.Fatalf("issuer certificate is not the intermediate: %v", err)
	}
	if st, _, raw := get("GET", "/v1/ca/issuer/int-1?format=pem", "", nil); st != http.StatusOK || !caParsePEM(t, raw)[0].Equal(inter) {
		t.Fatalf("issuer certificate in PEM: %d", st)
	}
	for _, p := range []string{"/v1/ca/issuer/int-2", "/v1/ca/issuer/root", "/v1/ca/issuer/int-1?format=xml"} {
		if st, _, _ := get("GET", p, "", nil); st != http.StatusNotFound && st != http.StatusBadRequest {
			t.Errorf("GET %s: %d", p, st)
		}
	}
	if st, _, _ := get("POST", "/v1/ca/ocsp", "", make([]byte, PKIMaxBodyBytes+1)); st != http.StatusRequestEntityTooLarge {
		t.Errorf("an OCSP request over the cap: %d, want 413", st)
	}
}
