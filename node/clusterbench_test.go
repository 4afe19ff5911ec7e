package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/internal/gcpolicy"
	"golang.org/x/crypto/acme"
)

// Clients per workload, as in the README's performance table.
const (
	acmeClients    = 32
	signClients    = 32
	encryptClients = 64
	kvPutClients   = 64
	kvGetClients   = 16
	mixedClients   = 32
	payloadSize    = 1024
)

// BenchmarkCluster runs each workload of the README's performance table
// on one durable 3-node cluster (real raftstore over TCP and TLS, fsync
// on every node, zlint and audit as in production) over HTTPS. Clients
// run closed loops on keep-alive connections, each request going to the
// next node in turn; a rate is operations over the loop's wall time. Any
// failed request (a transport error or an answer other than 2xx, and for
// ACME any error answer on the wire) fails the benchmark. Besides the rate
// and latencies, each reports the process's CPU time per operation
// (cpu-ms/op: the three nodes and the clients together), which a busy
// machine disturbs less than the rate.
//
// The process runs with the garbage collector's policy of `custos server`
// (internal/gcpolicy: GOGC=200 unless GOGC is set), since the nodes run in
// it.
//
// The nodes' goroutines carry the pprof label node=<id> (node1 starts as
// the leader), so a CPU profile tells them apart:
//
//	go test -tags ... -run '^$' -bench 'BenchmarkCluster/encrypt$' -cpuprofile cpu.out ./node/
//	go tool pprof -tagfocus node=node2 -top -cum node.test cpu.out
func BenchmarkCluster(b *testing.B) {
	gcpolicy.Apply(os.Getenv, gcpolicy.CgroupLimit)
	cb := newClusterBench(b)
	b.Run("acme-own-accounts", cb.acmeOwnAccounts)
	b.Run("acme-shared-account", cb.acmeSharedAccount)
	b.Run("rest-sign", cb.restSign)
	b.Run("encrypt", cb.encrypt)
	b.Run("kv-put", cb.kvPut)
	b.Run("kv-get", cb.kvGet)
	b.Run("follower-vs-leader", cb.followerVsLeader)
	b.Logf("leader at the end: %s", cb.leader(b).cfg.NodeID)
	for _, n := range cb.tc.nodes {
		rc := n.store.ReadCounts()
		b.Logf("%s: %d read-index requests sent, %d reads answered within their request's read session", n.cfg.NodeID, rc.ReadIndexRequests, rc.SessionReads)
	}
}

// clusterBench is the cluster and what the workloads set up on it, each
// once, on its first run.
type clusterBench struct {
	tc     *testCluster
	h      *http01
	admin  *client
	roots  *x509.CertPool         // the CA's roots, for ACME chains
	spread *http.Client           // each request to the next node
	pinned map[*Node]*http.Client // every request to one node
	wire   *errorCount            // error answers to the ACME clients
	acmeHC *http.Client           // spread, through wire

	own        []*acme.Client // one account per client
	shared     *acme.Client   // one account for all clients
	signBodies [][]byte
	encBodies  [][]byte
	kvBody     []byte
	kvSeq      atomic.Int64
	seeded     []string // secret paths written for the reads
	appToken   string   // a token of a policy that reads secrets and encrypts
}

const benchURL = "https://" + lbHost

func newClusterBench(b *testing.B) *clusterBench {
	h := newHTTP01(b)
	tc := newTestClusterWith(b, 3, func(c *Config) {
		c.ACMEHTTP01Port = h.port
		c.APIHosts = []string{lbHost}
		// The goroutines the node starts inherit the label.
		pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("node", c.NodeID)))
	})
	pprof.SetGoroutineLabels(context.Background())
	cb := &clusterBench{tc: tc, h: h, pinned: map[*Node]*http.Client{}}
	cb.admin = newClient(b, tc.nodes[0], tc.caFile)
	cb.admin.token = tc.root

	pemCA, err := os.ReadFile(tc.caFile)
	if err != nil {
		b.Fatal(err)
	}
	tlsRoots := x509.NewCertPool()
	tlsRoots.AppendCertsFromPEM(pemCA)
	const conns = 160
	rr := &roundRobin{}
	for _, n := range tc.nodes {
		rr.nodes = append(rr.nodes, nodeTransport(n, tlsRoots, conns))
		cb.pinned[n] = &http.Client{Timeout: time.Minute, Transport: nodeTransport(n, tlsRoots, conns)}
	}
	cb.spread = &http.Client{Timeout: time.Minute, Transport: rr}
	cb.wire = &errorCount{base: rr}
	cb.acmeHC = &http.Client{Timeout: time.Minute, Transport: cb.wire}

	resp, err := cb.spread.Get(benchURL + "/v1/ca/roots")
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cb.roots = x509.NewCertPool()
	if !cb.roots.AppendCertsFromPEM(raw) {
		b.Fatalf("no CA roots: %d %q", resp.StatusCode, raw)
	}
	return cb
}

// leader is the node that leads now, waiting through an election.
func (cb *clusterBench) leader(b *testing.B) *Node {
	var leader *Node
	waitFor(b, 30*time.Second, func() bool {
		for _, n := range cb.tc.nodes {
			if n.store.IsLeader() {
				leader = n
				return true
			}
		}
		return false
	})
	return leader
}

// ---------------------------------------------------------------- ACME

func (cb *clusterBench) acmeClient(b *testing.B) *acme.Client {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	a := &acme.Client{Key: key, DirectoryURL: benchURL + "/acme/acme/directory", HTTPClient: cb.acmeHC, UserAgent: "custos-bench"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		b.Fatalf("register: %v", err)
	}
	return a
}

// issue runs one complete http-01 issuance for 127.0.0.1 and checks the
// certificate.
func (cb *clusterBench) issue(a *acme.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	order, err := a.AuthorizeOrder(ctx, []acme.AuthzID{{Type: "ip", Value: "127.0.0.1"}})
	if err != nil {
		return fmt.Errorf("new order: %w", err)
	}
	for _, zurl := range order.AuthzURLs {
		z, err := a.GetAuthorization(ctx, zurl)
		if err != nil {
			return fmt.Errorf("authorization: %w", err)
		}
		if z.Status == acme.StatusValid {
			continue
		}
		var ch *acme.Challenge
		for _, c := range z.Challenges {
			if c.Type == "http-01" {
				ch = c
			}
		}
		if ch == nil {
			return fmt.Errorf("no http-01 challenge")
		}
		ka, err := a.HTTP01ChallengeResponse(ch.Token)
		if err != nil {
			return err
		}
		cb.h.mu.Lock()
		cb.h.keys[ch.Token] = ka
		cb.h.mu.Unlock()
		defer func() {
			cb.h.mu.Lock()
			delete(cb.h.keys, ch.Token)
			cb.h.mu.Unlock()
		}()
		if _, err := a.Accept(ctx, ch); err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		if _, err := a.WaitAuthorization(ctx, zurl); err != nil {
			return fmt.Errorf("wait authorization: %w", err)
		}
	}
	if _, err := a.WaitOrder(ctx, order.URI); err != nil {
		return fmt.Errorf("wait order: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, key)
	if err != nil {
		return err
	}
	der, _, err := a.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return fmt.Errorf("finalize: %w", err)
	}
	return checkChain(cb.roots, der, key)
}

func (cb *clusterBench) runACME(b *testing.B, clientOf func(worker int) *acme.Client) {
	b.ResetTimer()
	l := closedLoop(acmeClients, b.N, func(w int) error { return cb.issue(clientOf(w)) })
	b.StopTimer()
	cb.wire.check(b)
	l.report(b, "issuances/s")
}

// acmeOwnAccounts: complete issuances, each client on its own account.
func (cb *clusterBench) acmeOwnAccounts(b *testing.B) {
	for len(cb.own) < acmeClients {
		cb.own = append(cb.own, cb.acmeClient(b))
	}
	cb.runACME(b, func(w int) *acme.Client { return cb.own[w] })
}

// acmeSharedAccount: complete issuances, every client on one account, as
// cert-manager, Caddy and Traefik do per issuer.
func (cb *clusterBench) acmeSharedAccount(b *testing.B) {
	if cb.shared == nil {
		cb.shared = cb.acmeClient(b)
	}
	cb.runACME(b, func(int) *acme.Client { return cb.shared })
}

// ---------------------------------------------------------------- REST

// restSign: POST /v1/ca/sign/<role> with P-256 CSRs made beforehand.
func (cb *clusterBench) restSign(b *testing.B) {
	if cb.signBodies == nil {
		cb.admin.must("PUT", "/v1/ca/roles/bench", map[string]any{"allowed_domains": []string{"example.com"}, "allow_subdomains": true, "server_flag": true}, nil)
		for i := range 512 {
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			name := fmt.Sprintf("h%d.example.com", i)
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}}, key)
			if err != nil {
				b.Fatal(err)
			}
			body, _ := json.Marshal(map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), "ttl": "24h"})
			cb.signBodies = append(cb.signBodies, body)
		}
	}
	var next atomic.Int64
	b.ResetTimer()
	l := closedLoop(signClients, b.N, func(int) error {
		body := cb.signBodies[int(next.Add(1))%len(cb.signBodies)]
		return call(cb.spread, "POST", benchURL+"/v1/ca/sign/bench", cb.tc.root, body)
	})
	b.StopTimer()
	l.report(b, "certs/s")
}

// setupData makes the KMS key, the secret mount with the secrets the
// reads fetch, and a token of a policy that reads them and encrypts.
func (cb *clusterBench) setupData(b *testing.B) {
	if cb.seeded != nil {
		return
	}
	cb.admin.must("POST", "/v1/kms/keys/bench", map[string]any{"type": "aes256-gcm96"}, nil)
	for range 64 {
		pt := make([]byte, payloadSize)
		rand.Read(pt)
		body, _ := json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})
		cb.encBodies = append(cb.encBodies, body)
	}
	cb.admin.must("POST", "/v1/sys/mounts/bench", api.SecretMountRequest{}, nil)
	// {"data":{"v":"..."}} of payloadSize bytes.
	v := make([]byte, (payloadSize-len(`{"data":{"v":""}}`))*3/4)
	rand.Read(v)
	cb.kvBody, _ = json.Marshal(map[string]any{"data": map[string]string{"v": base64.RawURLEncoding.EncodeToString(v)}})
	var seeded []string
	for i := range 256 {
		p := fmt.Sprintf("/v1/secret/bench/data/seed/%d", i)
		cb.admin.must("POST", p, cb.kvBody, nil)
		seeded = append(seeded, p)
	}
	cb.admin.must("PUT", "/v1/sys/policies/bench-app", api.PolicyRequest{Policy: api.RawPolicy(
		`{"path": {"secret/bench/data/*": {"capabilities": ["read"]}, "kms/encrypt/bench": {"capabilities": ["update"]}}}`)}, nil)
	var tr api.TokenResponse
	cb.admin.must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"bench-app"}, TTL: "24h"}, &tr)
	cb.seeded, cb.appToken = seeded, tr.ClientToken
}

// encrypt: /v1/kms/encrypt/<key> of 1 KiB.
func (cb *clusterBench) encrypt(b *testing.B) {
	cb.setupData(b)
	var next atomic.Int64
	b.ResetTimer()
	l := closedLoop(encryptClients, b.N, func(int) error {
		body := cb.encBodies[int(next.Add(1))%len(cb.encBodies)]
		return call(cb.spread, "POST", benchURL+"/v1/kms/encrypt/bench", cb.tc.root, body)
	})
	b.StopTimer()
	l.report(b, "ops/s")
}

// kvPut: writes of 1 KiB secrets, each to a new path.
func (cb *clusterBench) kvPut(b *testing.B) {
	cb.setupData(b)
	b.ResetTimer()
	l := closedLoop(kvPutClients, b.N, func(int) error {
		p := fmt.Sprintf("/v1/secret/bench/data/put/%d", cb.kvSeq.Add(1))
		return call(cb.spread, "POST", benchURL+p, cb.tc.root, cb.kvBody)
	})
	b.StopTimer()
	l.report(b, "ops/s")
}

// kvGet: reads of the seeded secrets.
func (cb *clusterBench) kvGet(b *testing.B) {
	cb.setupData(b)
	var next atomic.Int64
	b.ResetTimer()
	l := closedLoop(kvGetClients, b.N, func(int) error {
		return call(cb.spread, "GET", benchURL+cb.seeded[int(next.Add(1))%len(cb.seeded)], cb.tc.root, nil)
	})
	b.StopTimer()
	l.report(b, "ops/s")
}

// followerVsLeader sends the same mix of token checks (lookup-self),
// secret reads and encryptions, with a token of a policy, only to the
// leader and then only to a follower, in alternating rounds, and reports
// both rates and follower/leader.
func (cb *clusterBench) followerVsLeader(b *testing.B) {
	cb.setupData(b)
	mixed := func(hc *http.Client) func(int) error {
		var next atomic.Int64
		return func(int) error {
			switch i := int(next.Add(1)); i % 3 {
			case 0:
				return call(hc, "GET", benchURL+"/v1/auth/token/lookup-self", cb.appToken, nil)
			case 1:
				return call(hc, "GET", benchURL+cb.seeded[i%len(cb.seeded)], cb.appToken, nil)
			default:
				return call(hc, "POST", benchURL+"/v1/kms/encrypt/bench", cb.appToken, cb.encBodies[i%len(cb.encBodies)])
			}
		}
	}
	// each round runs on the node that leads now and on another.
	round := func(k int) (leader, follower *load) {
		l := cb.leader(b)
		var f *Node
		for _, n := range cb.tc.nodes {
			if n != l {
				f = n
				break
			}
		}
		leader = closedLoop(mixedClients, k, mixed(cb.pinned[l]))
		follower = closedLoop(mixedClients, k, mixed(cb.pinned[f]))
		leader.check(b)
		follower.check(b)
		return leader, follower
	}
	round(2 * mixedClients) // warm the connections
	b.ResetTimer()
	const size = 600
	var leader, follower load
	for done := 0; done < b.N; done += size {
		l, f := round(min(size, b.N-done))
		leader.add(l)
		follower.add(f)
	}
	b.StopTimer()
	b.ReportMetric(leader.rate(), "leader-ops/s")
	b.ReportMetric(follower.rate(), "follower-ops/s")
	b.ReportMetric(follower.rate()/leader.rate(), "follower/leader")
	b.ReportMetric(leader.ms(0.5), "leader-p50-ms")
	b.ReportMetric(follower.ms(0.5), "follower-p50-ms")
	b.ReportMetric(leader.cpuMS(), "leader-cpu-ms/op")
	b.ReportMetric(follower.cpuMS(), "follower-cpu-ms/op")
}
