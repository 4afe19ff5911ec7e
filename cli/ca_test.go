package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/ca"
)

// testPKI is a root, an intermediate and a leaf with fixed names, serials
// and times. The keys are fresh, so only the PEM differs between runs.
type testPKI struct {
	root, intermediate, leaf, key string
	csrPEM                        string
	csrDER                        []byte
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	rootKey, intKey, leafKey := newKey(), newKey(), newKey()
	mk := func(serial int64, cn string, isCA bool, parent *x509.Certificate, pub any, signer *ecdsa.PrivateKey) (*x509.Certificate, string) {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: testTime, NotAfter: testTime.Add(365 * 24 * time.Hour),
			IsCA: isCA, BasicConstraintsValid: true, DNSNames: []string{},
		}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	root, rootPEM := mk(0x0a, "custos root", true, nil, &rootKey.PublicKey, rootKey)
	inter, intPEM := mk(0x0b, "custos intermediate", true, root, &intKey.PublicKey, rootKey)
	_, leafPEM := mk(0x0c, "api.example.com", false, inter, &leafKey.PublicKey, intKey)
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "api.example.com"}}, leafKey)
	if err != nil {
		t.Fatal(err)
	}
	return testPKI{
		root: rootPEM, intermediate: intPEM, leaf: leafPEM,
		key:    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		csrPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		csrDER: csr,
	}
}

// issued is the answer of issue (with the key) or sign (without).
func (p testPKI) issued(withKey bool) api.CACertificateResponse {
	r := api.CACertificateResponse{
		Certificate: p.leaf, Chain: []string{p.intermediate, p.root},
		Serial: "0c", Expiration: testTime.Add(365 * 24 * time.Hour),
	}
	if withKey {
		r.PrivateKey = p.key
	}
	return r
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCARoles(t *testing.T) {
	f := newFakeAPI(t)
	stored := api.CARole{
		Name: "web", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, TTL: "24h0m0s", MaxTTL: "720h0m0s",
		AllowedURISANs: []string{"spiffe://example.org/ns/*/sa/*"}, ServerFlag: new(true), ClientFlag: new(false),
	}
	f.reply("PUT /v1/ca/roles/web", http.StatusOK, stored)
	f.reply("GET /v1/ca/roles/web", http.StatusOK, stored)
	f.reply("GET /v1/ca/roles", http.StatusOK, api.ListResponse{Keys: []string{"mesh", "web"}})
	f.reply("DELETE /v1/ca/roles/web", http.StatusNoContent, nil)

	writes := func() api.CARole {
		rs := f.requests("PUT /v1/ca/roles/web")
		var got api.CARole
		rs[len(rs)-1].decode(t, &got)
		return got
	}

	// Flags: lists comma-separated or repeated; the flags only when given.
	r := f.run("", "ca", "role", "write", "web", "--allowed-domains", "example.com,example.net", "--allowed-domains", "example.org",
		"--allow-subdomains", "--allowed-uri-sans", "spiffe://example.org/ns/*/sa/*", "--max-ttl", "720h",
		"--key-usage", "digital_signature", "--client-flag=false", "--min-rsa-bits", "3072").wantCode(t, 0)
	want := api.CARole{
		AllowedDomains: []string{"example.com", "example.net", "example.org"}, AllowSubdomains: true,
		AllowedURISANs: []string{"spiffe://example.org/ns/*/sa/*"}, MaxTTL: "720h", KeyUsage: []string{"digital_signature"},
		ClientFlag: new(false), MinRSABits: 3072,
	}
	if got := writes(); !reflect.DeepEqual(got, want) {
		t.Fatalf("write body %+v, want %+v", got, want)
	}
	checkGolden(t, "ca-role.txt", r.stdout)

	// A document, from a file or stdin, goes as it is.
	doc := `{"allowed_domains":["internal"],"allow_subdomains":true,"server_flag":false}`
	want = api.CARole{AllowedDomains: []string{"internal"}, AllowSubdomains: true, ServerFlag: new(false)}
	f.run("", "ca", "role", "write", "web", "--file", writeTemp(t, "role.json", doc)).wantCode(t, 0)
	if got := writes(); !reflect.DeepEqual(got, want) {
		t.Fatalf("file body %+v", got)
	}
	f.run(doc, "ca", "role", "write", "web", "--file", "-").wantCode(t, 0)
	if got := writes(); !reflect.DeepEqual(got, want) {
		t.Fatalf("stdin body %+v", got)
	}
	r = f.run(`{"allowed_domain":["typo"]}`, "ca", "role", "write", "web", "--file", "-").wantCode(t, 1)
	if !strings.Contains(r.stderr, `unknown field "allowed_domain"`) || len(f.requests("PUT /v1/ca/roles/web")) != 3 {
		t.Fatalf("typo: %q", r.stderr)
	}

	r = f.run("", "ca", "role", "read", "web").wantCode(t, 0)
	checkGolden(t, "ca-role.txt", r.stdout)
	r = f.run("", "-o", "json", "ca", "role", "read", "web").wantCode(t, 0)
	var back api.CARole
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || !reflect.DeepEqual(back, stored) {
		t.Fatalf("json %v: %s", err, r.stdout)
	}
	if r = f.run("", "ca", "role", "list").wantCode(t, 0); r.stdout != "mesh\nweb\n" {
		t.Fatalf("list %q", r.stdout)
	}
	if r = f.run("", "ca", "role", "delete", "web").wantCode(t, 0); r.stdout != "Deleted role web\n" {
		t.Fatalf("delete %q", r.stdout)
	}
}

func TestCAFetch(t *testing.T) {
	f := newFakeAPI(t)
	p := newTestPKI(t)
	bundle := p.root + p.intermediate
	f.on("GET /v1/ca/roots", func(r recorded) (int, any) {
		if r.Query == "format=der" {
			b, _ := pem.Decode([]byte(p.root))
			return http.StatusOK, b.Bytes
		}
		return http.StatusOK, []byte(bundle)
	})
	f.reply("GET /v1/ca/chain", http.StatusOK, []byte(p.intermediate+p.root))
	f.reply("GET /v1/ca/crl", http.StatusOK, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	f.reply("GET /v1/ca/crl/int-2", http.StatusOK, []byte{0x30, 0x00})

	r := f.run("", "ca", "roots").wantCode(t, 0)
	if r.stdout != bundle || f.last("GET /v1/ca/roots").Query != "format=pem" {
		t.Fatalf("roots %q", r.stdout)
	}
	r = f.run("", "-o", "json", "ca", "roots").wantCode(t, 0)
	var roots map[string][]string
	if err := json.Unmarshal([]byte(r.stdout), &roots); err != nil || !reflect.DeepEqual(roots["certificates"], []string{p.root, p.intermediate}) {
		t.Fatalf("json roots %v: %s", err, r.stdout)
	}

	out := filepath.Join(t.TempDir(), "root.der")
	r = f.run("", "ca", "roots", "--format", "der", "--out", out).wantCode(t, 0)
	der, err := os.ReadFile(out)
	b, _ := pem.Decode([]byte(p.root))
	if err != nil || string(der) != string(b.Bytes) || !strings.HasPrefix(r.stdout, "Wrote ") {
		t.Fatalf("der %v, stdout %q", err, r.stdout)
	}
	r = f.run("", "-o", "json", "ca", "roots", "--format", "der", "--out", out).wantCode(t, 0)
	var fr caFileResult
	if err := json.Unmarshal([]byte(r.stdout), &fr); err != nil || fr != (caFileResult{File: out, Format: "der", Bytes: len(der)}) {
		t.Fatalf("json file %v: %s", err, r.stdout)
	}

	if r = f.run("", "ca", "chain").wantCode(t, 0); r.stdout != p.intermediate+p.root {
		t.Fatalf("chain %q", r.stdout)
	}
	r = f.run("", "ca", "crl").wantCode(t, 0)
	if !strings.HasPrefix(r.stdout, "-----BEGIN X509 CRL") || f.last("GET /v1/ca/crl").Query != "format=pem" {
		t.Fatalf("crl %q", r.stdout)
	}
	r = f.run("", "ca", "crl", "--issuer", "int-2", "--format", "der").wantCode(t, 0)
	if r.stdout != "\x30\x00" || f.last("GET /v1/ca/crl/int-2").Query != "format=der" {
		t.Fatalf("issuer crl %q", r.stdout)
	}

	// Errors of the server come through as API errors.
	f.reply("GET /v1/ca/chain", http.StatusServiceUnavailable, apiErrorDoc(api.CodeUnavailable, "the certificate authority is not running on this node"))
	r = f.run("", "ca", "chain").wantCode(t, 1)
	if r.stderr != "Error: the certificate authority is not running on this node (code unavailable, request req-1)\n" {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestCAInitIntermediate(t *testing.T) {
	f := newFakeAPI(t)
	p := newTestPKI(t)
	chain := api.CAChainResponse{Chain: []string{p.intermediate, p.root}}
	f.reply("POST /v1/ca/init", http.StatusOK, chain)
	f.reply("POST /v1/ca/intermediate/set", http.StatusOK, chain)
	f.reply("POST /v1/ca/intermediate/rotate", http.StatusOK, chain)
	f.reply("POST /v1/ca/intermediate/csr", http.StatusOK, api.CACSRResponse{CSR: p.csrPEM})

	r := f.run("", "ca", "init", "--common-name", "Example Root", "--key-type", "ecdsa-p384", "--root-ttl", "87600h").wantCode(t, 0)
	var init api.CAInitRequest
	f.last("POST /v1/ca/init").decode(t, &init)
	if init != (api.CAInitRequest{CommonName: "Example Root", KeyType: "ecdsa-p384", RootTTL: "87600h"}) {
		t.Fatalf("init %+v", init)
	}
	checkGolden(t, "ca-chain.txt", r.stdout)
	r = f.run("", "-o", "json", "ca", "init").wantCode(t, 0)
	var back api.CAChainResponse
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || !reflect.DeepEqual(back, chain) {
		t.Fatalf("json %v", err)
	}

	if r = f.run("", "ca", "intermediate", "csr").wantCode(t, 0); r.stdout != p.csrPEM {
		t.Fatalf("csr %q", r.stdout)
	}
	out := filepath.Join(t.TempDir(), "int.csr")
	f.run("", "ca", "intermediate", "csr", "--out", out).wantCode(t, 0)
	if b, err := os.ReadFile(out); err != nil || string(b) != p.csrPEM {
		t.Fatalf("csr file %v", err)
	}

	signed := p.intermediate + p.root
	for _, args := range [][]string{{writeTemp(t, "int.pem", signed)}, {"-"}} {
		r = f.run(signed, append([]string{"ca", "intermediate", "set"}, args...)...).wantCode(t, 0)
		rs := f.requests("POST /v1/ca/intermediate/set")
		var set api.CASetIntermediateRequest
		rs[len(rs)-1].decode(t, &set)
		if set.Certificate != signed {
			t.Fatalf("set %q", set.Certificate)
		}
		checkGolden(t, "ca-chain.txt", r.stdout)
	}
	r = f.run("", "ca", "intermediate", "rotate").wantCode(t, 0)
	if b := f.last("POST /v1/ca/intermediate/rotate").Body; len(b) != 0 {
		t.Fatalf("rotate body %q", b)
	}
	checkGolden(t, "ca-chain.txt", r.stdout)
}

func TestCAIssue(t *testing.T) {
	f := newFakeAPI(t)
	p := newTestPKI(t)
	f.reply("POST /v1/ca/issue/web", http.StatusOK, p.issued(true))
	args := []string{"ca", "issue", "web", "--common-name", "api.example.com", "--dns", "api.example.com", "--dns", "api",
		"--ip", "10.0.0.1", "--uri", "spiffe://example.org/api", "--ttl", "72h", "--key-type", "ed25519"}

	dir := filepath.Join(t.TempDir(), "tls")
	r := f.run("", append(args, "--out-dir", dir)...).wantCode(t, 0)
	var req api.CAIssueRequest
	f.last("POST /v1/ca/issue/web").decode(t, &req)
	want := api.CAIssueRequest{CommonName: "api.example.com", DNSNames: []string{"api.example.com", "api"},
		IPAddresses: []string{"10.0.0.1"}, URISANs: []string{"spiffe://example.org/api"}, TTL: "72h", KeyType: "ed25519"}
	if !reflect.DeepEqual(req, want) {
		t.Fatalf("issue %+v", req)
	}
	for name, c := range map[string]struct {
		content string
		perm    os.FileMode
	}{"cert.pem": {p.leaf, 0o644}, "key.pem": {p.key, 0o600}, "chain.pem": {p.intermediate + p.root, 0o644}} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		fi, _ := os.Stat(filepath.Join(dir, name))
		if err != nil || string(b) != c.content || fi.Mode().Perm() != c.perm {
			t.Fatalf("%s: %v, mode %v", name, err, fi.Mode())
		}
	}
	if strings.Contains(r.stdout, "PRIVATE KEY") {
		t.Fatalf("the key was printed:\n%s", r.stdout)
	}
	checkGolden(t, "ca-issue.txt", strings.ReplaceAll(r.stdout, dir, "DIR"))

	r = f.run("", append(args, "--out-dir", dir, "-o", "json")...).wantCode(t, 0)
	var res caIssued
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || strings.Contains(r.stdout, "PRIVATE KEY") ||
		res.Serial != "0c" || len(res.Files) != 3 || res.Files[1] != filepath.Join(dir, "key.pem") {
		t.Fatalf("json %v:\n%s", err, r.stdout)
	}

	// --print-key: certificate, chain, key, as PEM; JSON has it all.
	r = f.run("", append(args, "--print-key")...).wantCode(t, 0)
	if r.stdout != p.leaf+p.intermediate+p.root+p.key {
		t.Fatalf("print-key %q", r.stdout)
	}
	r = f.run("", append(args, "--print-key", "-o", "json")...).wantCode(t, 0)
	var full api.CACertificateResponse
	if err := json.Unmarshal([]byte(r.stdout), &full); err != nil || !reflect.DeepEqual(full, p.issued(true)) {
		t.Fatalf("json print-key %v", err)
	}
	// A directory that cannot be made fails before anything is issued.
	f.run("", append(args, "--out-dir", filepath.Join(writeTemp(t, "file", ""), "tls"))...).wantCode(t, 1)
	if n := len(f.requests("POST /v1/ca/issue/web")); n != 4 {
		t.Fatalf("%d issue requests", n)
	}
}

func TestCASign(t *testing.T) {
	f := newFakeAPI(t)
	p := newTestPKI(t)
	f.reply("POST /v1/ca/sign/web", http.StatusOK, p.issued(false))

	for _, tc := range []struct {
		name, stdin string
		args        []string
	}{
		{"pem file", "", []string{writeTemp(t, "req.pem", p.csrPEM)}},
		{"der file", "", []string{writeTemp(t, "req.der", string(p.csrDER))}},
		{"stdin", p.csrPEM, []string{"-", "--ttl", "1h"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.run(tc.stdin, append([]string{"ca", "sign", "web"}, tc.args...)...).wantCode(t, 0)
			rs := f.requests("POST /v1/ca/sign/web")
			var req api.CASignRequest
			rs[len(rs)-1].decode(t, &req)
			if req.CSR != p.csrPEM || r.stdout != p.leaf+p.intermediate+p.root {
				t.Fatalf("request %+v\nstdout %q", req, r.stdout)
			}
			if tc.name == "stdin" && req.TTL != "1h" {
				t.Fatalf("ttl %q", req.TTL)
			}
		})
	}
	r := f.run("", "-o", "json", "ca", "sign", "web", writeTemp(t, "req.pem", p.csrPEM)).wantCode(t, 0)
	var back api.CACertificateResponse
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || !reflect.DeepEqual(back, p.issued(false)) {
		t.Fatalf("json %v", err)
	}
}

func testCert(serial string, status ca.Status) api.CACert {
	return api.CACert{
		Serial: serial, Issuer: "int-1", Source: "rest", Role: "web", Status: status, CommonName: "api.example.com",
		DNSNames: []string{"api.example.com", "api"}, IPAddresses: []string{"10.0.0.1"},
		NotBefore: testTime, NotAfter: testTime.Add(72 * time.Hour),
	}
}

func TestCAList(t *testing.T) {
	f := newFakeAPI(t)
	// Three pages: the second one short, as a filtered scan may be.
	pagesOf := map[string]api.CACertList{
		"":   {Certs: []api.CACert{testCert("01", ca.StatusValid), testCert("02", ca.StatusRevoked)}, Next: "02"},
		"02": {Certs: []api.CACert{testCert("03", ca.StatusExpired)}, Next: "03"},
		"03": {Certs: []api.CACert{testCert("04", ca.StatusValid)}, Next: "04"},
	}
	f.on("GET /v1/ca/certs", func(r recorded) (int, any) {
		var after string
		for kv := range strings.SplitSeq(r.Query, "&") {
			if v, ok := strings.CutPrefix(kv, "after="); ok {
				after = v
			}
		}
		return http.StatusOK, pagesOf[after]
	})

	r := f.run("", "ca", "list", "--expiring", "72h", "--role", "web", "--san", "api", "--status", "valid", "--limit", "3").wantCode(t, 0)
	var queries []string
	for _, rq := range f.requests("GET /v1/ca/certs") {
		queries = append(queries, rq.Query)
	}
	wantQ := []string{
		"expiring=72h&limit=3&role=web&san=api&status=valid",
		"after=02&expiring=72h&limit=1&role=web&san=api&status=valid",
	}
	if !reflect.DeepEqual(queries, wantQ) {
		t.Fatalf("queries %q", queries)
	}
	checkGolden(t, "ca-list.txt", r.stdout)
	if r.stderr != "There are more: run again with --after 03\n" {
		t.Fatalf("stderr %q", r.stderr)
	}

	r = f.run("", "-o", "json", "ca", "list", "--limit", "0").wantCode(t, 0)
	var list api.CACertList
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Certs) != 4 || list.Next != "" || r.stderr != "" {
		t.Fatalf("json %v: %+v", err, list)
	}
	if rs := f.requests("GET /v1/ca/certs"); rs[len(rs)-1].Query != "after=04" {
		// All pages: no limit is sent, and the fake's empty page ends it.
		t.Fatalf("last query %q", rs[len(rs)-1].Query)
	}
}

func TestCAShowRevoke(t *testing.T) {
	f := newFakeAPI(t)
	p := newTestPKI(t)
	shown := testCert("0c", ca.StatusRevoked)
	shown.RevokedAt, shown.RevocationReason, shown.Certificate = testTime.Add(time.Hour), 1, p.leaf
	f.reply("GET /v1/ca/certs/0c", http.StatusOK, shown)
	f.reply("POST /v1/ca/revoke", http.StatusOK, func() api.CACert { c := shown; c.Certificate = ""; return c }())

	r := f.run("", "ca", "show", "0c").wantCode(t, 0)
	checkGolden(t, "ca-show.txt", strings.Replace(r.stdout, p.leaf, "LEAF PEM\n", 1))
	if r = f.run("", "ca", "show", "0c", "--pem").wantCode(t, 0); r.stdout != p.leaf {
		t.Fatalf("pem %q", r.stdout)
	}
	r = f.run("", "-o", "json", "ca", "show", "0c").wantCode(t, 0)
	var back api.CACert
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || !reflect.DeepEqual(back, shown) {
		t.Fatalf("json %v", err)
	}

	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 0},
		{[]string{"--reason", "keyCompromise"}, 1},
		{[]string{"--reason", "key-compromise"}, 1},
		{[]string{"--reason", "CESSATION_OF_OPERATION"}, 5},
		{[]string{"--reason", "aACompromise"}, 10},
	} {
		f.run("", append([]string{"ca", "revoke", "0c"}, tc.args...)...).wantCode(t, 0)
		rs := f.requests("POST /v1/ca/revoke")
		var req api.CARevokeRequest
		rs[len(rs)-1].decode(t, &req)
		if req != (api.CARevokeRequest{Serial: "0c", Reason: tc.code}) {
			t.Fatalf("%v: %+v", tc.args, req)
		}
	}
	if r = f.run("", "ca", "revoke", "0c").wantCode(t, 0); r.stdout != "Revoked 0c (keyCompromise) at 2030-01-02T04:04:05Z\n" {
		t.Fatalf("revoke %q", r.stdout)
	}
	r = f.run("", "-o", "json", "ca", "revoke", "0c").wantCode(t, 0)
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || back.RevocationReason != 1 || back.Status != ca.StatusRevoked {
		t.Fatalf("json revoke %v %s", err, r.stdout)
	}
}

func TestCAUsageErrors(t *testing.T) {
	f := newFakeAPI(t)
	role := writeTemp(t, "role.json", "{}")
	for _, args := range [][]string{
		{"ca", "nope"},
		{"ca", "roots", "extra"},
		{"ca", "roots", "--format", "txt"},
		{"-o", "json", "ca", "crl", "--format", "der"},
		{"ca", "init", "--root-ttl", "ten years"},
		{"ca", "role", "write"},
		{"ca", "role", "write", "web", "--file", role, "--max-ttl", "1h"},
		{"ca", "role", "write", "web", "--ttl", "1 day"},
		{"ca", "role", "write", "web", "--min-rsa-bits", "many"},
		{"ca", "role", "read"},
		{"ca", "issue", "web", "--common-name", "x"},
		{"ca", "issue", "web", "--common-name", "x", "--print-key", "--out-dir", "d"},
		{"ca", "issue", "web", "--print-key", "--ttl", "forever"},
		{"ca", "sign", "web"},
		{"ca", "list", "--status", "good"},
		{"ca", "list", "--expiring", "3d"},
		{"ca", "list", "--limit", "-1"},
		{"ca", "show"},
		{"ca", "revoke", "0c", "--reason", "removeFromCRL"},
		{"ca", "revoke", "0c", "--reason", "1"},
		{"ca", "intermediate", "set"},
		{"ca", "intermediate", "rotate", "now"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := f.run("", args...).wantCode(t, 2)
			if !strings.HasPrefix(r.stderr, "Error: ") || !strings.Contains(r.stderr, "--help' for usage") {
				t.Fatalf("stderr %q", r.stderr)
			}
		})
	}
	if n := len(f.requests("")); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
}
