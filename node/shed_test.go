package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/internal/clientip"
	"github.com/custos-pki/custos/internal/ratelimit"
	"golang.org/x/crypto/acme"
)

// spoofing sets the client-address header on every request, as an
// attacker would to dodge per-address limits.
type spoofing struct {
	next http.RoundTripper
	ip   string
}

func (s spoofing) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(clientip.Header, s.ip)
	return s.next.RoundTrip(r)
}

// TestLoadSheddingOnACluster runs on a real 3-node cluster: an
// unauthenticated init on the initialised cluster costs no Raft write; the
// leader limits ACME by the address of the client, which a follower's
// proxy carries to it, and which a client cannot choose by sending the
// header itself.
func TestLoadSheddingOnACluster(t *testing.T) {
	tc := newTestClusterWith(t, 3, func(c *Config) {
		c.Limits.ACME.NewAccountPerIP = ratelimit.Limit{Count: 2, Period: time.Hour}
		// Room for the unseals that build the cluster and the inits below.
		c.Limits.PublicPerIP = ratelimit.Limit{Count: 1, Period: time.Hour, Burst: 200}
	})
	leader, followers := -1, []int{}
	waitFor(t, 30*time.Second, func() bool {
		leader, followers = -1, nil
		for i, n := range tc.nodes {
			if n.store.IsLeader() {
				leader = i
			} else {
				followers = append(followers, i)
			}
		}
		return leader >= 0
	})

	t.Run("init on an initialised cluster", func(t *testing.T) {
		n := tc.nodes[followers[0]]
		c := newClient(t, n, tc.caFile)
		var h api.Health
		c.do("GET", "/v1/sys/health", nil, &h) // settle what the node knows
		applied := func() (sum uint64) {
			for _, m := range tc.nodes {
				sum += m.store.AppliedIndex()
			}
			return sum
		}
		// The cluster writes now and then on its own (keyring use counts,
		// promotions): a window of 60 refused inits must see no write at
		// all. Today's main makes four per init, in every window.
		for window := 1; ; window++ {
			before := applied()
			for range 60 {
				status, _ := c.do("POST", "/v1/sys/init", api.InitRequest{SecretShares: 5, SecretThreshold: 3}, nil)
				if status < 400 || status >= 500 {
					t.Fatalf("init on an initialised cluster answered %d", status)
				}
			}
			time.Sleep(200 * time.Millisecond) // let followers apply what the leader did
			after := applied()
			if after == before {
				break
			}
			if window == 3 {
				t.Fatalf("60 refused inits moved the applied indexes (summed over the nodes) from %d to %d", before, after)
			}
			t.Logf("window %d: the applied indexes moved by %d; again", window, after-before)
		}
	})

	t.Run("who may name the client address", func(t *testing.T) {
		l, f := tc.nodes[leader], tc.nodes[followers[0]]
		parse := func(c tls.Certificate) []*x509.Certificate {
			leaf, err := x509.ParseCertificate(c.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			return []*x509.Certificate{leaf}
		}
		mat := f.mat.Load()
		// A cluster certificate for a node that is not a member.
		svc, err := l.Services()
		if err != nil {
			t.Fatal(err)
		}
		signer, err := svc.KMS.Signer(context.Background(), clusterCAKey, 0)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := issue(mat.ca, signer, key.Public(), "node9", nil, true, time.Now(), DefaultNodeCertTTL)
		if err != nil {
			t.Fatal(err)
		}
		stranger, _ := x509.ParseCertificate(der)
		for name, tc := range map[string]struct {
			chain []*x509.Certificate
			want  bool
		}{
			"a member's cluster certificate": {parse(mat.node), true},
			"a member's API certificate":     {parse(mat.api), false},
			"a non-member's cluster cert":    {[]*x509.Certificate{stranger}, false},
			"no certificate":                 {nil, false},
		} {
			for i := range 2 { // the second time, from what the first verified
				if got := l.clusterPeer(&tls.ConnectionState{PeerCertificates: tc.chain}); got != tc.want {
					t.Errorf("%s, call %d: trusted %v, want %v", name, i, got, tc.want)
				}
			}
		}
	})

	t.Run("the leader proxy keeps its connections", func(t *testing.T) {
		p, err := tc.nodes[followers[0]].LeaderProxy(context.Background())
		if err != nil || p == nil {
			t.Fatalf("a follower's leader proxy: %v, %v", p, err)
		}
		if d := proxyDials(t, p, 32); d == 0 {
			t.Fatal("32 requests at once went out on no new connection")
		}
		// 32 clients again: each finds an idle connection, nothing is
		// dialled (once the connections of the round before are back in
		// the pool).
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			d := proxyDials(t, p, 32)
			if d == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rounds of 32 requests kept dialling new connections to the leader (%d in the last)", d)
			}
		}
	})

	t.Run("ACME limits by the client's address", func(t *testing.T) {
		pem, err := os.ReadFile(tc.caFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		// register makes an account through node i from source address
		// src, claiming to be spoof when it is set.
		register := func(i int, src, spoof string) error {
			var tr http.RoundTripper = &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
				DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext,
				DisableKeepAlives: true,
			}
			if spoof != "" {
				tr = spoofing{next: tr, ip: spoof}
			}
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			c := &acme.Client{Key: key, DirectoryURL: tc.nodes[i].APIURL() + "/acme/acme/directory",
				HTTPClient: &http.Client{Transport: tr, Timeout: 60 * time.Second},
				RetryBackoff: func(n int, _ *http.Request, resp *http.Response) time.Duration {
					if resp.StatusCode == http.StatusTooManyRequests || n > 5 {
						return 0 // no retry: the test wants to see it
					}
					return 100 * time.Millisecond
				}}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, err := c.Register(ctx, &acme.Account{}, acme.AcceptTOS)
			return err
		}
		wantLimited := func(err error, what string) {
			t.Helper()
			var ae *acme.Error
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusTooManyRequests || !strings.HasSuffix(ae.ProblemType, ":rateLimited") || ae.Header.Get("Retry-After") == "" {
				t.Fatalf("%s: %v, want rateLimited with Retry-After", what, err)
			}
		}
		l, f := leader, followers[0]
		// Straight to the leader, each claiming another address: the
		// claims are ignored, the third is over the limit of 2.
		for _, spoof := range []string{"10.0.0.1", "10.0.0.2"} {
			if err := register(l, "127.0.0.2", spoof); err != nil {
				t.Fatalf("account within the limit: %v", err)
			}
		}
		wantLimited(register(l, "127.0.0.2", "10.0.0.3"), "a spoofed address at the leader")
		// Through a follower the leader still sees 127.0.0.2 (not the
		// follower, not the claim).
		wantLimited(register(f, "127.0.0.2", "10.0.0.4"), "the same client through a follower")
		// Another client through the followers has its own budget.
		for _, i := range followers {
			if err := register(i, "127.0.0.3", ""); err != nil {
				t.Fatalf("another client through node %d: %v", i, err)
			}
		}
		wantLimited(register(f, "127.0.0.3", ""), "the other client past its limit")
	})
}

// TestACMEFloodPastTheLimitWritesNoAuditLines: ACME requests past the
// client address's limit are refused before the audit line, so a flood
// cannot fill the disk with audit entries.
func TestACMEFloodPastTheLimitWritesNoAuditLines(t *testing.T) {
	tc := newTestClusterWith(t, 1, func(c *Config) {
		c.Limits.ACME.RequestsPerIP = ratelimit.Limit{Count: 5, Period: time.Hour}
	})
	n := tc.nodes[0]
	c := newClient(t, n, tc.caFile)
	stepLines := func() int {
		raw, err := os.ReadFile(filepath.Join(tc.cfgs[0].DataDir, "audit.log"))
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Count(raw, []byte(`"operation":"step"`))
	}
	before := stepLines()
	limited := 0
	for range 60 {
		resp, err := c.hc.Head(n.APIURL() + "/acme/acme/new-nonce")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited < 50 {
		t.Fatalf("%d of 60 requests limited, want at least the 55 past the limit", limited)
	}
	if got := stepLines() - before; got > 5 {
		t.Fatalf("%d audit lines for 60 ACME requests of which %d were refused for load; want at most the 5 admitted", got, limited)
	}
}
