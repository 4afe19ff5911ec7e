package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
)

// The load side of the cluster benchmarks: transports that reach the
// nodes on keep-alive connections, a closed loop of clients, and its
// report.

// nodeTransport sends every request to node n, whatever the URL's host
// (lbHost, which every node's certificate names), on keep-alive
// connections.
func nodeTransport(n *Node, roots *x509.CertPool, conns int) *http.Transport {
	addr := strings.TrimPrefix(n.APIURL(), "https://")
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
	}
}

// roundRobin sends each request to the next node, as a load balancer that
// balances requests rather than connections.
type roundRobin struct {
	next  atomic.Uint64
	nodes []http.RoundTripper
}

func (r *roundRobin) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.nodes[r.next.Add(1)%uint64(len(r.nodes))].RoundTrip(req)
}

// errorCount wraps a transport and counts every answer of 400 or more:
// golang.org/x/crypto/acme retries some (badNonce, 5xx, 429) without
// telling its caller.
type errorCount struct {
	base   http.RoundTripper
	n      atomic.Int64
	mu     sync.Mutex
	sample []string
}

func (e *errorCount) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := e.base.RoundTrip(req)
	if err != nil || resp.StatusCode < 400 {
		return resp, err
	}
	raw, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	var problem struct{ Type, Detail string }
	json.Unmarshal(raw, &problem)
	e.n.Add(1)
	e.mu.Lock()
	if len(e.sample) < 5 {
		e.sample = append(e.sample, fmt.Sprintf("%s: %d %s %s", req.Method, resp.StatusCode, problem.Type, problem.Detail))
	}
	e.mu.Unlock()
	return resp, rerr
}

func (e *errorCount) check(b *testing.B) {
	b.Helper()
	if n := e.n.Load(); n > 0 {
		e.mu.Lock()
		defer e.mu.Unlock()
		b.Fatalf("%d error answers on the wire, e.g. %s", n, strings.Join(e.sample, "; "))
	}
}

// call sends one request with token and fails on a transport error or an
// answer other than 2xx.
func call(hc *http.Client, method, url, token string, body []byte) error {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return err
	}
	req.Header.Set(api.TokenHeader, token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("%s %s: %d %s", method, req.URL.Path, resp.StatusCode, bytes.TrimSpace(msg))
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// load is the outcome of a closed loop.
type load struct {
	n       int
	elapsed time.Duration
	cpu     time.Duration   // the whole process's: nodes and clients
	lat     []time.Duration // of the operations that succeeded, sorted
	fails   int64
	sample  []string
}

// closedLoop runs op n times from workers clients, each starting its next
// operation when the last one ends, and times the whole.
func closedLoop(workers, n int, op func(worker int) error) *load {
	var next, fails atomic.Int64
	lats := make([][]time.Duration, workers)
	var mu sync.Mutex
	var sample []string
	var wg sync.WaitGroup
	cpu, start := processCPU(), time.Now()
	for w := range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				t0 := time.Now()
				if err := op(w); err != nil {
					if fails.Add(1) <= 3 {
						mu.Lock()
						sample = append(sample, err.Error())
						mu.Unlock()
					}
					continue
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	l := &load{n: n, elapsed: time.Since(start), cpu: processCPU() - cpu, fails: fails.Load(), sample: sample}
	for _, s := range lats {
		l.lat = append(l.lat, s...)
	}
	slices.Sort(l.lat)
	return l
}

// add merges m, a later round of the same workload, into l.
func (l *load) add(m *load) {
	l.n += m.n
	l.elapsed += m.elapsed
	l.cpu += m.cpu
	l.fails += m.fails
	l.sample = append(l.sample, m.sample...)
	l.lat = append(l.lat, m.lat...)
	slices.Sort(l.lat)
}

func (l *load) rate() float64 { return float64(l.n) / l.elapsed.Seconds() }

// cpuMS is the process's CPU time per operation, in milliseconds: all
// three nodes and the clients. Unlike the rate, it holds on a busy
// machine.
func (l *load) cpuMS() float64 { return float64(l.cpu.Microseconds()) / 1000 / float64(l.n) }

// ms is the p-th quantile of the latencies, in milliseconds.
func (l *load) ms(p float64) float64 {
	if len(l.lat) == 0 {
		return 0
	}
	i := min(len(l.lat)-1, int(p*float64(len(l.lat))))
	return float64(l.lat[i].Microseconds()) / 1000
}

// check fails the benchmark if any operation failed.
func (l *load) check(b *testing.B) {
	b.Helper()
	if l.fails > 0 {
		b.Fatalf("%d of %d operations failed, e.g. %s", l.fails, l.n, strings.Join(l.sample, "; "))
	}
}

// report fails the benchmark if any operation failed, and reports the
// rate over the loop's wall time in unit, the median and 99th percentile
// latencies, and the CPU time per operation.
func (l *load) report(b *testing.B, unit string) {
	b.Helper()
	l.check(b)
	b.ReportMetric(l.rate(), unit)
	b.ReportMetric(l.ms(0.50), "p50-ms")
	b.ReportMetric(l.ms(0.99), "p99-ms")
	b.ReportMetric(l.cpuMS(), "cpu-ms/op")
}

// checkChain checks an ACME certificate for 127.0.0.1: it verifies to
// roots and carries the public key of the CSR.
func checkChain(roots *x509.CertPool, der [][]byte, key *ecdsa.PrivateKey) error {
	if len(der) == 0 {
		return errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(der[0])
	if err != nil {
		return fmt.Errorf("leaf: %w", err)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return errors.New("the certificate is not for the CSR's key")
	}
	inter := x509.NewCertPool()
	for _, d := range der[1:] {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return fmt.Errorf("chain: %w", err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: "127.0.0.1"}); err != nil {
		return fmt.Errorf("chain does not verify: %w", err)
	}
	return nil
}
