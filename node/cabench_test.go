package node

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
)

// BenchmarkRESTSign3Nodes measures REST issuance (POST /v1/ca/sign/{role}
// with P-256 CSRs) on a 3-node durable cluster over HTTPS, with 32 clients
// spread over the nodes, and reports a bare x509.CreateCertificate rate
// measured in the same run.
func BenchmarkRESTSign3Nodes(b *testing.B) {
	tc := newTestCluster(b, 3)
	c := newClient(b, tc.nodes[0], tc.caFile)
	c.token = tc.root
	c.must("PUT", "/v1/ca/roles/web", map[string]any{"allowed_domains": []string{"example.com"}, "allow_subdomains": true, "server_flag": true}, nil)

	// Pre-made CSRs, so that the clients' key generation is not measured.
	const pool = 256
	var csrs [][]byte
	for i := 0; i < pool; i++ {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: fmt.Sprintf("h%d.example.com", i)}, DNSNames: []string{fmt.Sprintf("h%d.example.com", i)},
		}, key)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := json.Marshal(map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), "ttl": "24h"})
		csrs = append(csrs, body)
	}
	pemCA, _ := os.ReadFile(tc.caFile)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemCA)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64,
	}}
	var next, fails atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			n := tc.nodes[i%3]
			req, _ := http.NewRequest("POST", n.APIURL()+"/v1/ca/sign/web", bytes.NewReader(csrs[i%pool]))
			req.Header.Set(api.TokenHeader, tc.root)
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
		b.Fatalf("%d of %d requests failed", f, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "certs/s")
	b.ReportMetric(bareCreateRate(), "bare-certs/s")
}

// bareCreateRate is x509.CreateCertificate's rate for a P-256 leaf.
func bareCreateRate() float64 {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const n = 2000
	start := time.Now()
	for i := 0; i < n; i++ {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), DNSNames: []string{"a.example.com"},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		if _, err := x509.CreateCertificate(rand.Reader, tmpl, ca, leafKey.Public(), caKey); err != nil {
			panic(err)
		}
	}
	return n / time.Since(start).Seconds()
}
