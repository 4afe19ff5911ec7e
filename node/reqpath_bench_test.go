package node

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
)

// BenchmarkReqPath measures the authenticated request path of the three
// workloads of a KMS and secret store (encrypt 1 KiB, KV put 1 KiB, KV
// get) on a 3-node durable cluster over HTTPS, through the leader and
// through a follower, with a token that holds an ordinary policy (not
// root), so that every request is authenticated, authorised and audited
// twice. Each sub-benchmark reports req/s and the process's CPU time per
// request (nodes and clients together: the figure to compare on a busy
// machine); with CUSTOS_BENCH_PROFILE_DIR set it also writes a CPU profile
// of its timed part there, e.g.
//
//	CUSTOS_BENCH_PROFILE_DIR=/tmp go test -tags nobadger,nomysql,nopgx \
//	    -run '^$' -bench 'BenchmarkReqPath/encrypt/follower' -benchtime 5000x ./node/
//	go tool pprof -top -cum /tmp/encrypt-follower.prof
func BenchmarkReqPath(b *testing.B) {
	tc := newTestCluster(b, 3)
	leader, follower := tc.leaderAndFollower(b)
	root := newClient(b, tc.nodes[leader], tc.caFile)
	root.token = tc.root
	root.must("PUT", "/v1/sys/policies/bench", api.PolicyRequest{Policy: api.RawPolicy(
		`{"path": {"kms/encrypt/bench": {"capabilities": ["update"]}, "secret/kv/data/*": {"capabilities": ["read", "update"]}}}`)}, nil)
	root.must("POST", "/v1/kms/keys/bench", map[string]any{}, nil)
	root.must("POST", "/v1/sys/mounts/kv", api.SecretMountRequest{}, nil)
	var tr api.TokenResponse
	root.must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"bench"}, TTL: "2h"}, &tr)
	token := tr.ClientToken

	pt := make([]byte, 1024)
	rand.Read(pt)
	encBody, _ := json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})
	putBody, _ := json.Marshal(api.SecretWriteRequest{Data: fmt.Appendf(nil, `{"v":%q}`, base64.StdEncoding.EncodeToString(pt[:760]))})
	const secrets = 256
	for i := range secrets {
		root.must("PUT", fmt.Sprintf("/v1/secret/kv/data/get/%d", i), json.RawMessage(putBody), nil)
	}
	// Every node has applied the writes above before the clock starts.
	last := tc.nodes[leader].store.AppliedIndex()
	for _, n := range tc.nodes {
		waitFor(b, 30*time.Second, func() bool { return n.store.AppliedIndex() >= last })
	}

	pemCA, _ := os.ReadFile(tc.caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 128,
	}}
	type workload struct {
		name    string
		clients int
		req     func(base string, i int64) *http.Request
	}
	workloads := []workload{
		{"encrypt", 64, func(base string, _ int64) *http.Request {
			r, _ := http.NewRequest("POST", base+"/v1/kms/encrypt/bench", bytes.NewReader(encBody))
			return r
		}},
		{"kvput", 64, func(base string, i int64) *http.Request {
			r, _ := http.NewRequest("PUT", fmt.Sprintf("%s/v1/secret/kv/data/put/%d", base, i%1024), bytes.NewReader(putBody))
			return r
		}},
		{"kvget", 16, func(base string, i int64) *http.Request {
			r, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/secret/kv/data/get/%d", base, i%secrets), nil)
			return r
		}},
	}
	for _, w := range workloads {
		for _, via := range []struct {
			name string
			node int
		}{{"leader", leader}, {"follower", follower}} {
			b.Run(w.name+"/"+via.name, func(b *testing.B) {
				base := tc.nodes[via.node].APIURL()
				var next, fails atomic.Int64
				b.SetParallelism((w.clients + 1) / 2)
				stopProfile := profileTimed(b, w.name+"-"+via.name)
				cpu0 := processCPU()
				b.ResetTimer()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						req := w.req(base, next.Add(1))
						req.Header.Set(api.TokenHeader, token)
						resp, err := hc.Do(req)
						if err != nil {
							fails.Add(1)
							continue
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode >= 300 {
							fails.Add(1)
						}
					}
				})
				elapsed := time.Since(start)
				b.StopTimer()
				cpu := processCPU() - cpu0
				stopProfile()
				if f := fails.Load(); f > 0 {
					b.Fatalf("%d of %d requests failed", f, b.N)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
			})
		}
	}
}

// profileTimed writes a CPU profile of the timed part alone to
// $CUSTOS_BENCH_PROFILE_DIR/<name>.prof when that is set (-cpuprofile
// would also hold the cluster's start-up).
func profileTimed(b *testing.B, name string) (stop func()) {
	dir := os.Getenv("CUSTOS_BENCH_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, name+".prof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
