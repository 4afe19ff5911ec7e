package node

import (
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	stepapi "github.com/smallstep/certificates/api"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/ca"
	"github.com/smallstep/certificates/errs"
)

// stepStatus is the HTTP status of an error step's client library returns.
func stepStatus(t *testing.T, err error) int {
	t.Helper()
	var e *errs.Error
	if !errors.As(err, &e) {
		t.Fatalf("not an error of the CA: %v", err)
	}
	return e.Status
}

// stepMTLS is a transport that presents the certificate of a step sign
// answer and its key, and trusts roots, as `step ca renew` does.
func stepMTLS(t *testing.T, roots *x509.CertPool, sr *stepapi.SignResponse, key crypto.PrivateKey) *http.Transport {
	t.Helper()
	cert := tls.Certificate{Leaf: sr.ServerPEM.Certificate, PrivateKey: key}
	cert.Certificate = append(cert.Certificate, sr.ServerPEM.Raw)
	for _, c := range sr.CertChainPEM[1:] {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}}
}

// TestStepCLIFlows drives a 3-node cluster with the step CLI's client
// library (github.com/smallstep/certificates/ca), doing what the CLI's
// commands do: `step ca bootstrap --fingerprint` with the cluster CA's
// fingerprint, `step ca provisioner list`, `step ca token` and `step ca
// certificate` with a JWK provisioner an operator made through the API,
// `step ca renew` over mTLS, `step ca revoke` with a token and over mTLS.
// A name outside the provisioner's policy is refused, tokens are accepted
// for every API host (its own --api-hosts, each member's advertised host)
// and no other, and a deleted provisioner's tokens stop working.
func TestStepCLIFlows(t *testing.T) {
	tc := newTestClusterWith(t, 3, func(c *Config) {
		c.APIHosts = []string{c.NodeID + ".example.test"}
		if c.NodeID == "node3" { // another loopback address: a host no other node has
			c.APIAddr = strings.Replace(c.APIAddr, "127.0.0.1", "127.0.0.3", 1)
		}
	})
	n1, n2, n3 := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	raw, err := os.ReadFile(tc.caFile)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	sum := sha256.Sum256(b.Bytes)
	fp := hex.EncodeToString(sum[:]) // what `custos ca step bootstrap` prints

	// An operator makes a JWK provisioner, through a follower.
	const password = "correct horse battery staple"
	admin := newClient(t, n2, tc.caFile)
	admin.token = tc.root
	var ops api.StepProvisioner
	admin.must("POST", "/v1/ca/step/provisioners", api.StepProvisioner{
		Name: "ops", Password: password, AllowedNames: []string{".svc.example.com"}, MaxLifetime: "24h",
	}, &ops)
	if ops.KeyID == "" || ops.Password != "" {
		t.Fatalf("created provisioner: %+v", ops)
	}
	if st, _ := admin.do("POST", "/v1/ca/step/provisioners", api.StepProvisioner{Name: "acme", Password: password}, nil); st != http.StatusConflict {
		t.Errorf("a JWK provisioner named as the ACME one: %d, want 409", st)
	}
	if st, _ := admin.do("POST", "/v1/ca/step/provisioners", api.StepProvisioner{Name: "short", Password: "1234"}, nil); st != http.StatusBadRequest {
		t.Errorf("a 4-byte password: %d, want 400", st)
	}
	anon := newClient(t, n1, tc.caFile)
	if st, _ := anon.do("POST", "/v1/ca/step/provisioners", api.StepProvisioner{Name: "x", Password: password}, nil); st != http.StatusUnauthorized && st != http.StatusForbidden {
		t.Errorf("create without a token: %d", st)
	}

	// step ca bootstrap: /root/<fingerprint> of the cluster CA, then TLS
	// verified with it.
	boot, err := ca.NewClient(n3.APIURL(), ca.WithRootSHA256(fp))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := boot.Health(); err != nil {
		t.Fatalf("health over TLS verified with the pinned cluster CA: %v", err)
	}
	fed, err := boot.Federation()
	if err != nil || len(fed.Certificates) < 2 {
		t.Fatalf("federation: %v (%d certificates)", err, len(fed.Certificates))
	}

	// step ca provisioner list (waits for node3 to see the new provisioner).
	var found bool
	waitFor(t, 30*time.Second, func() bool {
		list, err := boot.Provisioners()
		if err != nil {
			t.Fatalf("provisioners: %v", err)
		}
		for _, p := range list.Provisioners {
			if p.GetName() == "ops" && p.GetType() == provisioner.TypeJWK {
				_, enc, _ := p.GetEncryptedKey()
				found = p.GetID() != "" && enc != ""
				return true
			}
		}
		return false
	})
	if !found {
		t.Fatal("the JWK provisioner is listed without its key")
	}

	// step ca token (the encrypted key from node3, decrypted with the
	// password) and step ca certificate (bootstrapped from the token).
	prov, err := ca.NewProvisioner("ops", "", n3.APIURL(), []byte(password), ca.WithRootSHA256(fp))
	if err != nil {
		t.Fatalf("provisioner key: %v", err)
	}
	if _, err := ca.NewProvisioner("ops", "", n3.APIURL(), []byte("wrong password!"), ca.WithRootSHA256(fp)); err == nil {
		t.Error("the provisioner key decrypted with a wrong password")
	}
	if prov.Fingerprint() != fp {
		t.Errorf("token fingerprint %s, want the cluster CA's %s", prov.Fingerprint(), fp)
	}
	certify := func(p *ca.Provisioner, name string) (*stepapi.SignResponse, crypto.PrivateKey, error) {
		t.Helper()
		tok, err := p.Token(name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ca.Bootstrap(tok)
		if err != nil {
			t.Fatalf("bootstrap from the token: %v", err)
		}
		req, key, err := ca.CreateSignRequest(tok)
		if err != nil {
			t.Fatal(err)
		}
		sr, err := c.Sign(req)
		return sr, key, err
	}
	sr, key, err := certify(prov, "web.svc.example.com")
	if err != nil {
		t.Fatalf("step ca certificate: %v", err)
	}
	leaf := sr.ServerPEM.Certificate
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "web.svc.example.com" {
		t.Fatalf("certificate names %v", leaf.DNSNames)
	}
	roots, err := boot.Roots()
	if err != nil {
		t.Fatal(err)
	}
	pkiRoots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range roots.Certificates {
		pkiRoots.AddCert(c.Certificate)
	}
	for _, c := range sr.CertChainPEM[1:] {
		inter.AddCert(c.Certificate)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pkiRoots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("the certificate does not chain to the PKI root: %v", err)
	}

	// The policy: a name outside it is refused, before anything is signed.
	if _, _, err := certify(prov, "web.other.example.com"); err == nil || stepStatus(t, err) != http.StatusForbidden {
		t.Fatalf("a name outside the provisioner's policy: %v, want 403", err)
	}

	// Audiences: every API host of the node, and each member's advertised
	// host (node3 is alone on 127.0.0.3), are accepted; others are not.
	c1, err := ca.NewClient(n1.APIURL(), ca.WithRootSHA256(fp))
	if err != nil {
		t.Fatal(err)
	}
	_, n3port, _ := strings.Cut(strings.TrimPrefix(n3.APIURL(), "https://"), ":")
	for aud, want := range map[string]bool{
		"https://node1.example.test/1.0/sign":       true,
		"https://127.0.0.3:" + n3port + "/1.0/sign": true,
		"https://ca.elsewhere.example/1.0/sign":     false,
		"https://node1.example.test.evil/1.0/sign":  false,
	} {
		prov.SetAudience(aud)
		tok, err := prov.Token("aud.svc.example.com")
		if err != nil {
			t.Fatal(err)
		}
		req, _, err := ca.CreateSignRequest(tok)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c1.Sign(req)
		if got := err == nil; got != want {
			t.Errorf("token for %s on node1: accepted %v, want %v (%v)", aud, got, want, err)
		}
	}
	prov.SetAudience(n3.APIURL() + "/1.0/sign")

	// step ca renew, over mTLS, on another node.
	c2, err := ca.NewClient(n2.APIURL(), ca.WithRootSHA256(fp))
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := c2.Renew(stepMTLS(t, c2.GetRootCAs(), sr, key))
	if err != nil {
		t.Fatalf("step ca renew: %v", err)
	}
	if renewed.ServerPEM.SerialNumber.Cmp(leaf.SerialNumber) == 0 || renewed.ServerPEM.DNSNames[0] != "web.svc.example.com" {
		t.Fatal("the renewal is not a new certificate for the same name")
	}

	// step ca revoke with a token (its subject is the serial).
	revokeProv, err := ca.NewProvisioner("ops", ops.KeyID, n1.APIURL(), []byte(password), ca.WithRootSHA256(fp))
	if err != nil {
		t.Fatal(err)
	}
	revokeProv.SetAudience(n1.APIURL() + "/1.0/revoke")
	serial := leaf.SerialNumber.String()
	rtok, err := revokeProv.Token(serial)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Revoke(&stepapi.RevokeRequest{Serial: serial, OTT: rtok, ReasonCode: 1, Passive: true}, nil); err != nil {
		t.Fatalf("step ca revoke with a token: %v", err)
	}
	if _, err := c2.Renew(stepMTLS(t, c2.GetRootCAs(), sr, key)); err == nil {
		t.Error("a revoked certificate was renewed")
	}

	// step ca revoke over mTLS: the certificate revokes itself.
	sr2, key2, err := certify(prov, "db.svc.example.com")
	if err != nil {
		t.Fatal(err)
	}
	serial2 := sr2.ServerPEM.SerialNumber.String()
	if _, err := c2.Revoke(&stepapi.RevokeRequest{Serial: serial2, ReasonCode: 4, Passive: true}, stepMTLS(t, c2.GetRootCAs(), sr2, key2)); err != nil {
		t.Fatalf("step ca revoke over mTLS: %v", err)
	}
	if _, err := c2.Renew(stepMTLS(t, c2.GetRootCAs(), sr2, key2)); err == nil {
		t.Error("a certificate revoked over mTLS was renewed")
	}

	// step ca crl: package ca's CRL holds both.
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c1.GetRootCAs(), MinVersion: tls.VersionTLS12}}}).Get(n1.APIURL() + "/crl")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("/crl: %d: %v", resp.StatusCode, err)
	}
	listed := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		listed[e.SerialNumber.String()] = true
	}
	if !listed[serial] || !listed[serial2] {
		t.Errorf("the CRL lacks a revoked certificate: %v", listed)
	}

	// A deleted provisioner's tokens are refused at once, on every node.
	admin.must("DELETE", "/v1/ca/step/provisioners/ops", nil, nil)
	if _, _, err := certify(prov, "late.svc.example.com"); err == nil || stepStatus(t, err) != http.StatusUnauthorized {
		t.Errorf("a token of a deleted provisioner: %v, want 401", err)
	}
}
