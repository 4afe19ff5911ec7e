package node

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
)

// stepRenew posts to step's /renew on node n over mutual TLS with the
// certificate and key of a REST issuance, and returns the status.
func stepRenew(t *testing.T, tc *testCluster, n *Node, is api.CACertificateResponse) int {
	t.Helper()
	pair, err := tls.X509KeyPair([]byte(is.Certificate+strings.Join(is.Chain, "")), []byte(is.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	pemCA, err := os.ReadFile(tc.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair},
	}}}
	resp, err := hc.Post(n.APIURL()+"/renew", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusCreated {
		var out struct {
			Crt string `json:"crt"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("renewal answer %s: %v", body, err)
		}
		if b, _ := pem.Decode([]byte(out.Crt)); b == nil {
			t.Fatalf("renewal answer without a certificate: %s", body)
		}
	}
	return resp.StatusCode
}

// TestStepRenewFollowsRole: step's /renew of a certificate issued under a
// REST role is checked against the role as it stands now: refused once the
// role no longer allows its name, once the certificate is revoked, and
// once the role is deleted.
func TestStepRenewFollowsRole(t *testing.T) {
	tc := newTestCluster(t, 1)
	n := tc.nodes[0]
	c := newClient(t, n, tc.caFile)
	c.token = tc.root
	web := api.CARole{AllowedDomains: []string{"example.com"}, AllowSubdomains: true, ClientFlag: new(bool), ServerFlag: new(bool)}
	*web.ClientFlag, *web.ServerFlag = true, true
	c.must("PUT", "/v1/ca/roles/web", web, nil)
	issue := func(name string) api.CACertificateResponse {
		var is api.CACertificateResponse
		c.must("POST", "/v1/ca/issue/web", api.CAIssueRequest{DNSNames: []string{name}, TTL: "1h"}, &is)
		return is
	}
	a, b, d := issue("a.example.com"), issue("b.example.com"), issue("d.example.com")
	if st := stepRenew(t, tc, n, a); st != http.StatusCreated {
		t.Fatalf("renewal under the role as issued: %d", st)
	}

	narrowed := web
	narrowed.AllowedDomains, narrowed.AllowSubdomains = []string{"b.example.com", "d.example.com"}, false
	c.must("PUT", "/v1/ca/roles/web", narrowed, nil)
	if st := stepRenew(t, tc, n, a); st != http.StatusForbidden {
		t.Errorf("renewal of a name the role no longer allows: %d, want 403", st)
	}
	if st := stepRenew(t, tc, n, b); st != http.StatusCreated {
		t.Errorf("renewal of a name still allowed: %d", st)
	}

	c.must("POST", "/v1/ca/revoke", api.CARevokeRequest{Serial: b.Serial, Reason: 1}, nil)
	if st := stepRenew(t, tc, n, b); st != http.StatusForbidden {
		t.Errorf("renewal of a revoked certificate: %d, want 403", st)
	}

	c.must("DELETE", "/v1/ca/roles/web", nil, nil)
	if st := stepRenew(t, tc, n, d); st != http.StatusForbidden {
		t.Errorf("renewal after the role was deleted: %d, want 403", st)
	}
}

// TestACMEProvisionerRoutes: the provisioner routes need a token, and
// create, read, update, list and delete work through a follower.
func TestACMEProvisionerRoutes(t *testing.T) {
	tc := newTestCluster(t, 3)
	var follower *Node
	for _, n := range tc.nodes {
		if !n.store.IsLeader() {
			follower = n
		}
	}
	c := newClient(t, follower, tc.caFile)
	if st, _ := c.do("GET", "/v1/ca/acme/provisioners", nil, nil); st != http.StatusUnauthorized && st != http.StatusForbidden {
		t.Fatalf("list without a token: %d", st)
	}
	c.token = tc.root
	var p api.ACMEProvisioner
	c.must("POST", "/v1/ca/acme/provisioners", api.ACMEProvisioner{Name: "web", AllowedNames: []string{".Example.com"}, MaxLifetime: "24h"}, &p)
	if p.Directory != "/acme/web/directory" || p.AllowedNames[0] != ".example.com" || p.MaxLifetime != "24h0m0s" {
		t.Errorf("created %+v", p)
	}
	if st, code := c.do("POST", "/v1/ca/acme/provisioners", api.ACMEProvisioner{Name: "web"}, nil); st != http.StatusConflict {
		t.Errorf("second create: %d %s", st, code)
	}
	if st, code := c.do("POST", "/v1/ca/acme/provisioners", api.ACMEProvisioner{Name: "x", DeniedNames: []string{"*.*.a"}}, nil); st != http.StatusBadRequest || code != api.CodeInvalidArgument {
		t.Errorf("bad entry: %d %s", st, code)
	}
	if st, _ := c.do("POST", "/v1/ca/acme/provisioners", []byte(`{"name":"x","unknown":1}`), nil); st != http.StatusBadRequest {
		t.Errorf("unknown field: %d", st)
	}
	c.must("PUT", "/v1/ca/acme/provisioners/web", api.ACMEProvisioner{RequireEAB: true}, &p)
	if !p.RequireEAB || len(p.AllowedNames) != 0 {
		t.Errorf("updated %+v", p)
	}
	var list api.ACMEProvisionerList
	c.must("GET", "/v1/ca/acme/provisioners", nil, &list)
	if len(list.Provisioners) != 2 || list.Provisioners[0].Name != "acme" || list.Provisioners[1].Name != "web" {
		t.Errorf("list %+v", list)
	}
	c.must("DELETE", "/v1/ca/acme/provisioners/web", nil, nil)
	if st, _ := c.do("GET", "/v1/ca/acme/provisioners/web", nil, nil); st != http.StatusNotFound {
		t.Errorf("read after delete: %d", st)
	}
}
