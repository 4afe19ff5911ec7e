package node

import (
	"bytes"
	"crypto"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"golang.org/x/crypto/ocsp"
)

// On a follower of a 3-node cluster a flood of OCSP requests for one
// certificate gets one signed response, applies nothing to the Raft log,
// and a revocation made through another node shows in its answers within
// the staleness bound.
func TestOCSPOnAFollowerIsCachedAndSeesRevocations(t *testing.T) {
	tc := newTestCluster(t, 3)
	c := newClient(t, tc.nodes[0], tc.caFile)
	c.token = tc.root
	c.must("PUT", "/v1/ca/roles/web", map[string]any{"allowed_domains": []string{"example.com"}, "allow_subdomains": true, "server_flag": true}, nil)
	var issued api.CACertificateResponse
	c.must("POST", "/v1/ca/issue/web", api.CAIssueRequest{CommonName: "www.example.com", TTL: "1h"}, &issued)
	leaf, inter := parsePEMCert(t, issued.Certificate), parsePEMCert(t, issued.Chain[0])
	req, err := ocsp.CreateRequest(leaf, inter, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}

	var follower *Node
	waitFor(t, 30*time.Second, func() bool {
		for _, n := range tc.nodes {
			if !n.store.IsLeader() && n.store.AppliedIndex() > 0 {
				follower = n
				return true
			}
		}
		return false
	})
	fc := newClient(t, follower, tc.caFile)
	ask := func() ([]byte, *ocsp.Response) {
		t.Helper()
		resp, err := fc.hc.Post(follower.APIURL()+"/v1/ca/ocsp", "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		der, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("OCSP: %d %v", resp.StatusCode, err)
		}
		r, err := ocsp.ParseResponseForCert(der, leaf, inter)
		if err != nil {
			t.Fatalf("OCSP response: %v", err)
		}
		return der, r
	}
	waitFor(t, 30*time.Second, func() bool { _, r := ask(); return r.Status == ocsp.Good })
	first, _ := ask()
	// Start from a settled cluster: every node has applied the same index
	// and it held for a second, so what the nodes were still catching up
	// on is not counted as the flood's.
	applied := make([]uint64, len(tc.nodes))
	waitFor(t, 60*time.Second, func() bool {
		for i, n := range tc.nodes {
			applied[i] = n.store.AppliedIndex()
			if applied[i] != applied[0] {
				return false
			}
		}
		time.Sleep(time.Second)
		for i, n := range tc.nodes {
			if n.store.AppliedIndex() != applied[i] {
				return false
			}
		}
		return true
	})
	for i := range 50 {
		// ECDSA signatures are randomised: equal bytes mean one signature.
		if der, _ := ask(); !bytes.Equal(der, first) {
			t.Fatalf("answer %d was signed again", i)
		}
	}
	for i, n := range tc.nodes {
		if got := n.store.AppliedIndex(); got != applied[i] {
			t.Fatalf("node %d applied %d entries during the flood", i+1, got-applied[i])
		}
	}

	c.must("POST", "/v1/ca/revoke", api.CARevokeRequest{Serial: issued.Serial, Reason: 1}, nil)
	waitFor(t, 60*time.Second, func() bool { _, r := ask(); return r.Status == ocsp.Revoked })
}
