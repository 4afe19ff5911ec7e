package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRESTSign signs P-256 CSRs through CA.Sign (role check, lint,
// KMS signature, verification, inventory write) on one durable node, and
// measures in the same run the rate of bare x509.CreateCertificate with an
// in-memory P-256 key and the same parallelism, for comparison. It reports
// the process's CPU time per certificate too.
func BenchmarkRESTSign(b *testing.B) {
	c, _ := newTestCA(b)
	csrs := make([][]byte, 64)
	for i := range csrs {
		csrs[i] = csrFor(b, p256(b), fmt.Sprintf("bench-%d.example.com", i), nil, nil)
	}
	var n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	cpu := processCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := c.Sign(bg, "web", csrs[i%int64(len(csrs))], SignOptions{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/cert")
	b.StopTimer()
	b.ReportMetric(bareCreateRate(b, max(b.N, 2000), 8*runtime.GOMAXPROCS(0)), "bare-certs/s")
}

// processCPU is the CPU time this process has used, user and system, on
// all its threads: the Raft and storage goroutines count with the signing.
// Unlike a rate it hardly changes with the load of other processes.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	must(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bareCreateRate is how many leaf certificates per second
// x509.CreateCertificate signs with a P-256 key in memory.
func bareCreateRate(b *testing.B, count, workers int) float64 {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(b, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bare"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, key.Public(), key)
	must(b, err)
	issuer, err := x509.ParseCertificate(der)
	must(b, err)
	leaf := p256(b)
	var left atomic.Int64
	left.Store(int64(count))
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				serial, _ := newSerial()
				tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "bare.example.com"}, DNSNames: []string{"bare.example.com"},
					NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
					ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
				if _, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, leaf.Public(), key); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(count) / time.Since(start).Seconds()
}

// benchLeaf is a test CA and the complete template of a REST leaf of its
// role "web" for a new P-256 key.
func benchLeaf(b *testing.B) (*CA, *issuers, *x509.Certificate, crypto.PublicKey) {
	c, _ := newTestCA(b)
	set, err := c.issuers(bg)
	must(b, err)
	r, err := c.ReadRole(bg, "web")
	must(b, err)
	pub := p256(b).Public()
	tmpl, err := c.template(&r, request{pub: pub, cn: "bench.example.com"}, false)
	must(b, err)
	c.setURLs(tmpl, set.active)
	return c, set, tmpl, pub
}

// BenchmarkLintTBS builds, parses and lints the TBSCertificate of a REST
// leaf (CA.lintTBS), the CPU a certificate costs before the KMS signs it.
// Run with -benchmem: allocations per certificate do not depend on the
// machine's load.
func BenchmarkLintTBS(b *testing.B) {
	c, set, tmpl, pub := benchLeaf(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.lintTBS(set.active.cert, tmpl, pub); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignSerial is CA.Sign one certificate at a time (parse and
// check the CSR, role, lint, KMS signature, record), with its allocations.
func BenchmarkSignSerial(b *testing.B) {
	c, _ := newTestCA(b)
	csr := csrFor(b, p256(b), "bench.example.com", nil, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Sign(bg, "web", csr, SignOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignTemplate signs a complete leaf template as the step-ca
// embedding does, before and after SignTemplate: "lint-then-x509" lints a
// TBSCertificate of its own (what Config.Linter did) and lets crypto/x509
// build it again, sign with the kms signer and verify the signature once
// more; "sign-template" builds it once, lints it and has the kms signer,
// which checks its signature, sign it.
func BenchmarkSignTemplate(b *testing.B) {
	c, _, tmpl, pub := benchLeaf(b)
	tmpl.PublicKey = pub
	signer, chain, err := c.Issuer(bg)
	must(b, err)
	b.Run("lint-then-x509", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.lintTBS(chain[0], tmpl, pub); err != nil {
				b.Fatal(err)
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, chain[0], pub, signer)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := x509.ParseCertificate(der); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sign-template", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.SignTemplate(bg, tmpl, chain[0], signer); err != nil {
				b.Fatal(err)
			}
		}
	})
}
