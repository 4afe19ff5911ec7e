package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/internal/testutil"
)

// freeAddr returns a loopback address with a free port, out of the range
// outgoing connections take their ports from (testutil.FreeAddr).
func freeAddr(t testing.TB) string { return testutil.FreeAddr(t) }

func testConfig(t testing.TB, id string) Config {
	cfg := DefaultConfig()
	cfg.NodeID = id
	cfg.DataDir = filepath.Join(t.TempDir(), id)
	cfg.APIAddr = freeAddr(t)
	cfg.ClusterAddr = freeAddr(t)
	cfg.HeartbeatTimeout = 500 * time.Millisecond
	cfg.ElectionTimeout = 500 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.RaftLog = io.Discard
	if os.Getenv("CUSTOS_TEST_LOG") != "" {
		cfg.Logger, cfg.RaftLog = slog.Default(), os.Stderr
	}
	return cfg
}

func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// client is a minimal HTTPS client for the tests.
type client struct {
	t     testing.TB
	base  string
	token string
	hc    *http.Client
}

func newClient(t testing.TB, n *Node, caFile string) *client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &client{t: t, base: n.APIURL(), hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}}
}

// do sends body (a value, raw []byte, or nil) and decodes the answer into
// out when given. It returns the status and the error code, if any.
func (c *client) do(method, path string, body, out any) (int, string) {
	c.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.base+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set(api.TokenHeader, c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal(raw, &e); err != nil && resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusNotImplemented && resp.StatusCode != http.StatusTooManyRequests {
			c.t.Fatalf("%s %s: %d with a body that is not an error document: %q", method, path, resp.StatusCode, raw)
		}
		return resp.StatusCode, e.Error.Code
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, ""
}

func (c *client) must(method, path string, body, out any) {
	c.t.Helper()
	if status, code := c.do(method, path, body, out); status >= 300 {
		c.t.Fatalf("%s %s: %d %s", method, path, status, code)
	}
}

// testCluster is three real nodes over HTTPS and mutual TLS on loopback.
type testCluster struct {
	nodes  []*Node
	cfgs   []Config
	keys   []string
	root   string
	caFile string
}

func (tc *testCluster) unseal(t testing.TB, i int) {
	t.Helper()
	c := newClient(t, tc.nodes[i], tc.caFile)
	for _, k := range tc.keys[:3] {
		var st api.SealStatus
		c.must("POST", "/v1/sys/unseal", api.UnsealRequest{Key: k}, &st)
	}
	var st api.SealStatus
	c.must("GET", "/v1/sys/seal-status", nil, &st)
	if st.Sealed {
		t.Fatalf("node %d still sealed", i)
	}
}

func newTestCluster(t testing.TB, size int) *testCluster {
	t.Helper()
	return newTestClusterWith(t, size, nil)
}

func newTestClusterWith(t testing.TB, size int, edit func(*Config)) *testCluster {
	t.Helper()
	if edit == nil {
		edit = func(*Config) {}
	}
	tc := &testCluster{}
	cfg := testConfig(t, "node1")
	edit(&cfg)
	n1 := startNode(t, cfg)
	tc.nodes, tc.cfgs = append(tc.nodes, n1), append(tc.cfgs, cfg)
	boot := newClient(t, n1, n1.CACertPath())
	var ir api.InitResponse
	boot.must("POST", "/v1/sys/init", api.InitRequest{SecretShares: 5, SecretThreshold: 3}, &ir)
	if len(ir.Keys) != 5 || ir.RootToken == "" || !strings.Contains(ir.ClusterCACert, "BEGIN CERTIFICATE") {
		t.Fatalf("init answer: %d keys, token %v", len(ir.Keys), ir.RootToken != "")
	}
	tc.keys, tc.root = ir.Keys, ir.RootToken
	tc.caFile = filepath.Join(t.TempDir(), "cluster-ca.pem")
	if err := os.WriteFile(tc.caFile, []byte(ir.ClusterCACert), 0o644); err != nil {
		t.Fatal(err)
	}
	tc.unseal(t, 0)
	for i := 2; i <= size; i++ {
		c := newClient(t, n1, tc.caFile)
		c.token = tc.root
		cfg := testConfig(t, fmt.Sprintf("node%d", i))
		edit(&cfg)
		var jt api.JoinTokenResponse
		// As an operator would: the token names the hosts the new node
		// serves its API at, its listen address among them.
		hosts := append([]string{}, cfg.APIHosts...)
		if h, _, err := net.SplitHostPort(cfg.APIAddr); err == nil {
			hosts = append(hosts, h)
		}
		c.must("POST", "/v1/sys/join-token", api.JoinTokenRequest{TTL: "10m", APIHosts: hosts}, &jt)
		cfg.JoinAddr, cfg.JoinToken, cfg.JoinCAFingerprint = n1.APIURL(), jt.Token, jt.CAFingerprint
		n := startNode(t, cfg)
		tc.nodes, tc.cfgs = append(tc.nodes, n), append(tc.cfgs, cfg)
		// It joins as a non-voter and becomes a voter when it is unsealed.
		waitFor(t, 30*time.Second, func() bool { return n.store.AppliedIndex() > 0 })
		tc.unseal(t, i-1)
		waitFor(t, 30*time.Second, func() bool { return voters(n1) == i })
	}
	return tc
}

func voters(n *Node) int {
	v := 0
	for _, p := range n.store.Status().Peers {
		if p.Voter {
			v++
		}
	}
	return v
}

func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestThreeNodeClusterInitJoinUnseal(t *testing.T) {
	tc := newTestCluster(t, 3)
	for i, n := range tc.nodes {
		c := newClient(t, n, tc.caFile)
		var h api.Health
		if status, _ := c.do("GET", "/v1/sys/health", nil, &h); status != http.StatusOK {
			t.Fatalf("node %d health %d", i, status)
		}
		c.token = tc.root
		var st api.RaftStatus
		c.must("GET", "/v1/sys/raft/peers", nil, &st)
		if status, _ := c.do("GET", "/v1/sys/metrics", nil, nil); status != http.StatusOK {
			t.Fatalf("node %d metrics: %d", i, status)
		}
		if len(st.Peers) != 3 {
			t.Fatalf("node %d sees %d peers", i, len(st.Peers))
		}
		// A token made through one node works on every node.
		var tr api.TokenResponse
		c.must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"}, &tr)
		for j, m := range tc.nodes {
			o := newClient(t, m, tc.caFile)
			o.token = tr.ClientToken
			var self api.TokenResponse
			o.must("GET", "/v1/auth/token/lookup-self", nil, &self)
			if self.Accessor != tr.Accessor {
				t.Fatalf("token from node %d looked up on node %d: %q", i, j, self.Accessor)
			}
		}
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
