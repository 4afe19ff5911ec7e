package node

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/internal/testutil/testca"
)

// A workload with a certificate from a trusted CA logs in over mutual TLS
// and gets a token with the role's policies; one from another CA does not.
func TestCertificateLoginOverMutualTLS(t *testing.T) {
	tc := newTestCluster(t, 1)
	n := tc.nodes[0]
	c := newClient(t, n, tc.caFile)
	c.token = tc.root
	workloadCA := testca.New(t, "workload CA")
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: workloadCA.Cert.Raw}))
	c.must("PUT", "/v1/sys/policies/app-read", api.PolicyRequest{Policy: api.RawPolicy(`{"path": {"kms/encrypt/app": {"capabilities": ["update"]}}}`)}, nil)
	c.must("PUT", "/v1/auth/cert/roles/web", map[string]any{
		"ca_certificates": caPEM, "allowed_common_names": []string{"web-*"}, "policies": []string{"app-read"},
	}, nil)

	login := func(cert tls.Certificate) (int, string, api.TokenResponse) {
		pemCA, _ := os.ReadFile(tc.caFile)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemCA)
		cl := &client{t: t, base: n.APIURL(), hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		}}}
		var tr api.TokenResponse
		status, code := cl.do("POST", "/v1/auth/cert/login", api.CertLoginRequest{Role: "web"}, &tr)
		return status, code, tr
	}
	status, code, tr := login(workloadCA.NodeCert(t, "web-1"))
	if status != http.StatusOK || tr.ClientToken == "" {
		t.Fatalf("login with a good certificate: %d %s", status, code)
	}
	if len(tr.Policies) != 2 || tr.Policies[0] != "app-read" {
		t.Fatalf("policies %v", tr.Policies)
	}
	if status, code, _ := login(workloadCA.NodeCert(t, "db-1")); status != http.StatusForbidden {
		t.Fatalf("login with a name outside the role: %d %s", status, code)
	}
	stranger := testca.New(t, "another CA")
	if status, code, _ := login(stranger.NodeCert(t, "web-1")); status != http.StatusForbidden {
		t.Fatalf("login with a certificate from another CA: %d %s", status, code)
	}
}

// certLogin logs in over mutual TLS with cert to role on n.
func certLogin(t *testing.T, tc *testCluster, n *Node, cert tls.Certificate, role string) (int, string, api.TokenResponse) {
	t.Helper()
	pemCA, err := os.ReadFile(tc.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	cl := &client{t: t, base: n.APIURL(), hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}}}
	var tr api.TokenResponse
	status, code := cl.do("POST", "/v1/auth/cert/login", api.CertLoginRequest{Role: role}, &tr)
	return status, code, tr
}

// A client certificate from custos's own CA logs in through a role that
// trusts that CA until custos revokes it; from then on it is refused, and
// the token it got is revoked.
func TestCertificateLoginRefusesACertificateCustosRevoked(t *testing.T) {
	tc := newTestCluster(t, 1)
	n := tc.nodes[0]
	c := newClient(t, n, tc.caFile)
	c.token = tc.root
	yes := true
	c.must("PUT", "/v1/ca/roles/clients", api.CARole{
		AllowedDomains: []string{"example.com"}, AllowSubdomains: true, ClientFlag: &yes, TTL: "1h", MaxTTL: "2h",
	}, nil)
	var issued api.CACertificateResponse
	c.must("POST", "/v1/ca/issue/clients", api.CAIssueRequest{CommonName: "web-1.example.com"}, &issued)
	cert, err := tls.X509KeyPair([]byte(issued.Certificate+"\n"+issued.Chain[0]), []byte(issued.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	rootPEM := fetchRoots(t, tc, n)
	c.must("PUT", "/v1/auth/cert/roles/custos-clients", map[string]any{
		"ca_certificates": rootPEM, "allowed_common_names": []string{"web-*"}, "policies": []string{"default"},
	}, nil)

	status, code, tr := certLogin(t, tc, n, cert, "custos-clients")
	if status != http.StatusOK || tr.ClientToken == "" {
		t.Fatalf("login before revocation: %d %s", status, code)
	}
	tok := newClient(t, n, tc.caFile)
	tok.token = tr.ClientToken
	tok.must("GET", "/v1/auth/token/lookup-self", nil, nil)

	c.must("POST", "/v1/ca/revoke", api.CARevokeRequest{Serial: issued.Serial, Reason: 1}, nil)
	if status, code, tr := certLogin(t, tc, n, cert, "custos-clients"); status != http.StatusForbidden || tr.ClientToken != "" {
		t.Fatalf("login with a revoked certificate: %d %s", status, code)
	}
	// The token that certificate got before is revoked with it.
	if status, code := tok.do("GET", "/v1/auth/token/lookup-self", nil, nil); status != http.StatusForbidden {
		t.Fatalf("token from the revoked certificate: %d %s", status, code)
	}
}

func fetchRoots(t *testing.T, tc *testCluster, n *Node) string {
	t.Helper()
	c := newClient(t, n, tc.caFile)
	resp, err := c.hc.Get(n.APIURL() + "/v1/ca/roots")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("roots: %d %v", resp.StatusCode, err)
	}
	return string(b)
}
