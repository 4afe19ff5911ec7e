package node

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
)

// BenchmarkAPIEncrypt measures authenticated kms encryptions of 1 KiB per
// second against one durable node over HTTPS, from 64 concurrent clients on
// keep-alive connections. Every request is authenticated, authorised and
// written to the audit log twice.
func BenchmarkAPIEncrypt(b *testing.B) {
	n, token := startDevNode(b)
	c := newClient(b, n, n.CACertPath())
	c.token = token
	c.must("POST", "/v1/kms/keys/bench", map[string]any{}, nil)

	pemCA, _ := os.ReadFile(n.CACertPath())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 128,
	}}
	pt := make([]byte, 1024)
	rand.Read(pt)
	body, _ := json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})
	url := n.APIURL() + "/v1/kms/encrypt/bench"
	var fails atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
			req.Header.Set(api.TokenHeader, token)
			resp, err := hc.Do(req)
			if err != nil {
				fails.Add(1)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				fails.Add(1)
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if f := fails.Load(); f > 0 {
		b.Fatalf("%d requests failed", f)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
}

// startDevNode starts one durable node in dev mode (initialised and
// unsealed with a key file) and returns it with the root token that dev
// mode writes to its env file.
func startDevNode(tb testing.TB) (*Node, string) {
	tb.Helper()
	cfg := testConfig(tb, "bench")
	cfg.UnsealKeyFile = filepath.Join(cfg.DataDir, "unseal.key")
	cfg.Dev = true
	n := startNode(tb, cfg)
	env, err := os.ReadFile(filepath.Join(cfg.DataDir, "env"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range bytes.Split(env, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("export CUSTOS_TOKEN=")); ok {
			return n, string(v)
		}
	}
	tb.Fatal("dev mode wrote no root token")
	return nil, ""
}
