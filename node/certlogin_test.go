package node

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
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
