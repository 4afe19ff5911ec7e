package node

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"golang.org/x/crypto/acme"
)

// http01 answers http-01 challenges on 127.0.0.1 for every client.
type http01 struct {
	mu   sync.Mutex
	keys map[string]string // token -> key authorization
	port int
}

func newHTTP01(t testing.TB) *http01 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &http01{keys: map[string]string{}, port: ln.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		ka, ok := h.keys[strings.TrimPrefix(r.URL.Path, "/.well-known/acme-challenge/")]
		h.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(ka))
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return h
}

// acmeCluster is a 3-node cluster whose ACME validator reaches the test's
// http-01 server.
func acmeCluster(t *testing.T) (*testCluster, *http01) {
	h := newHTTP01(t)
	tc := newTestClusterWith(t, 3, func(c *Config) {
		c.ACMEHTTP01Port = h.port
		c.APIHosts = []string{lbHost}
	})
	return tc, h
}

// lbHost is the name clients use for the whole cluster, as behind a load
// balancer; lb decides which node each new connection reaches.
const lbHost = "custos.test"

type lb struct {
	mu    sync.Mutex
	nodes []*Node
	pick  func(i int) int // which node the i-th connection goes to
	n     int
}

func (l *lb) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	l.mu.Lock()
	n := l.nodes[l.pick(l.n)%len(l.nodes)]
	l.n++
	l.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", strings.TrimPrefix(n.APIURL(), "https://"))
}

// route sends every following connection to node i.
func (l *lb) route(i int) {
	l.mu.Lock()
	l.pick = func(int) int { return i }
	l.mu.Unlock()
}

// acmeClient is an ACME client of the default provisioner that reaches the
// cluster through l, with a new connection (so possibly a new node) for
// every request.
func acmeClient(t testing.TB, tc *testCluster, l *lb, key crypto.Signer) *acme.Client {
	return acmeClientOf(t, tc, l, key, "acme")
}

// acmeClientOf is acmeClient for provisioner prov.
func acmeClientOf(t testing.TB, tc *testCluster, l *lb, key crypto.Signer, prov string) *acme.Client {
	pemCA, err := os.ReadFile(tc.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	return &acme.Client{Key: key, DirectoryURL: "https://" + lbHost + "/acme/" + prov + "/directory", HTTPClient: &http.Client{
		Timeout: 60 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			DialContext:       l.dial,
			DisableKeepAlives: true,
		},
	}}
}

// issueVia runs one http-01 order for 127.0.0.1 with client a; before the
// finalize, beforeFinalize runs (to send it elsewhere).
func issueVia(ctx context.Context, h *http01, a *acme.Client, beforeFinalize func()) ([][]byte, error) {
	ids := []acme.AuthzID{{Type: "ip", Value: "127.0.0.1"}}
	order, err := a.AuthorizeOrder(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("new order: %w", err)
	}
	for _, zurl := range order.AuthzURLs {
		z, err := a.GetAuthorization(ctx, zurl)
		if err != nil {
			return nil, err
		}
		if z.Status == acme.StatusValid {
			continue
		}
		for _, ch := range z.Challenges {
			if ch.Type != "http-01" {
				continue
			}
			ka, err := a.HTTP01ChallengeResponse(ch.Token)
			if err != nil {
				return nil, err
			}
			h.mu.Lock()
			h.keys[ch.Token] = ka
			h.mu.Unlock()
			if _, err := a.Accept(ctx, ch); err != nil {
				return nil, fmt.Errorf("accept: %w", err)
			}
		}
		if _, err := a.WaitAuthorization(ctx, zurl); err != nil {
			return nil, fmt.Errorf("authorization: %w", err)
		}
	}
	if _, err := a.WaitOrder(ctx, order.URI); err != nil {
		return nil, err
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, key)
	if beforeFinalize != nil {
		beforeFinalize()
	}
	der, _, err := a.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return nil, fmt.Errorf("finalize: %w", err)
	}
	return der, nil
}

func verifyChain(t testing.TB, tc *testCluster, n *Node, der [][]byte) {
	t.Helper()
	c := newClient(t, n, tc.caFile)
	resp, err := c.hc.Get(n.APIURL() + "/v1/ca/roots")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(raw) {
		t.Fatal("no roots")
	}
	leaf, err := x509.ParseCertificate(der[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, d := range der[1:] {
		if c, err := x509.ParseCertificate(d); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("chain does not verify: %v", err)
	}
}

func TestACMEOnThreeNodes(t *testing.T) {
	tc, h := acmeCluster(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := &lb{nodes: tc.nodes}

	// A locked-down provisioner and its EAB key are made through a
	// follower; the leader, which serves ACME, loads it from storage.
	var follower *Node
	for _, n := range tc.nodes {
		if !n.store.IsLeader() {
			follower = n
		}
	}
	admin := newClient(t, follower, tc.caFile)
	admin.token = tc.root
	admin.must("POST", "/v1/ca/acme/provisioners", api.ACMEProvisioner{Name: "locked", RequireEAB: true, AllowedNames: []string{"127.0.0.1"}}, nil)
	var k api.EABResponse
	admin.must("POST", "/v1/ca/acme/eab", api.EABRequest{Provisioner: "locked"}, &k)
	hmacKey, err := base64.RawURLEncoding.DecodeString(k.HMACKey)
	if err != nil {
		t.Fatal(err)
	}
	c := acmeClientOf(t, tc, l, key, "locked")

	// Without a binding, no account, through node 2; with it the account
	// is made through node 1, the order through node 2, and it is
	// finalised through node 3.
	l.route(1)
	_, err = c.Register(ctx, &acme.Account{}, acme.AcceptTOS)
	var ae *acme.Error
	if !errors.As(err, &ae) || ae.ProblemType != "urn:ietf:params:acme:error:externalAccountRequired" {
		t.Fatalf("registration without EAB: %v, want externalAccountRequired", err)
	}
	l.route(0)
	if _, err := c.Register(ctx, &acme.Account{ExternalAccountBinding: &acme.ExternalAccountBinding{KID: k.KeyID, Key: hmacKey}}, acme.AcceptTOS); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AuthorizeOrder(ctx, acme.DomainIDs("not-allowed.test")); !errors.As(err, &ae) || ae.ProblemType != "urn:ietf:params:acme:error:rejectedIdentifier" {
		t.Fatalf("order for a name not allowed: %v, want rejectedIdentifier", err)
	}
	l.route(1)
	der, err := issueVia(ctx, h, c, func() { l.route(2) })
	if err != nil {
		t.Fatal(err)
	}
	verifyChain(t, tc, tc.nodes[0], der)

	t.Run("50 concurrent orders on one account, spread over the nodes", func(t *testing.T) {
		l.mu.Lock()
		l.pick = func(i int) int { return i }
		l.mu.Unlock()
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if _, err := issueVia(ctx, h, c, nil); err != nil {
					errs <- fmt.Errorf("order %d: %w", i, err)
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("issuance across a leader kill", func(t *testing.T) {
		var leader *Node
		var rest []*Node
		for _, n := range tc.nodes {
			if n.store.IsLeader() {
				leader = n
			} else {
				rest = append(rest, n)
			}
		}
		if leader == nil {
			t.Fatal("no leader")
		}
		leader.http.Close()
		leader.store.Kill()
		l.mu.Lock()
		l.nodes = rest
		l.mu.Unlock()
		deadline := time.Now().Add(30 * time.Second)
		for {
			der, err := issueVia(ctx, h, c, nil)
			if err == nil {
				verifyChain(t, tc, rest[0], der)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no issuance after the leader kill: %v", err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
}

func TestACMEExternalAccountBindingKey(t *testing.T) {
	tc := newTestCluster(t, 1)
	c := newClient(t, tc.nodes[0], tc.caFile)
	c.token = tc.root
	var k api.EABResponse
	c.must("POST", "/v1/ca/acme/eab", api.EABRequest{Reference: "team-a"}, &k)
	if k.Provisioner != "acme" {
		t.Errorf("EAB key of provisioner %q, want the default", k.Provisioner)
	}
	if status, code := c.do("POST", "/v1/ca/acme/eab", api.EABRequest{Provisioner: "nobody"}, nil); status != http.StatusNotFound || code != api.CodeNotFound {
		t.Fatalf("a key for a provisioner that does not exist: %d %s", status, code)
	}
	if k.KeyID == "" || len(k.HMACKey) < 32 {
		t.Fatalf("EAB key %+v", k.KeyID)
	}
	if status, code := c.do("POST", "/v1/ca/acme/eab", api.EABRequest{Reference: "team-a"}, nil); status != http.StatusConflict || code != api.CodeConflict {
		t.Fatalf("a second key with the same reference: %d %s", status, code)
	}
}
