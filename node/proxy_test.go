package node

import (
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPeerCache: a cached verification of a cluster certificate holds only
// for that certificate, under the CA it verified against, within its
// validity; what does not verify is refused every time.
func TestPeerCache(t *testing.T) {
	now := time.Now()
	newMaterial := func() (*material, *x509.Certificate, func(id string, cluster bool, ttl time.Duration) *x509.Certificate) {
		key, err := newKey()
		if err != nil {
			t.Fatal(err)
		}
		ca, err := newCACert(key, "test cluster CA", now)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		leaf := func(id string, cluster bool, ttl time.Duration) *x509.Certificate {
			k, err := newKey()
			if err != nil {
				t.Fatal(err)
			}
			der, err := issue(ca, key, k.Public(), id, []string{id}, cluster, now, ttl)
			if err != nil {
				t.Fatal(err)
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		return &material{ca: ca, pool: pool}, ca, leaf
	}
	mat, _, leaf := newMaterial()
	other, _, otherLeaf := newMaterial()
	member := leaf("node1", true, time.Hour)
	apiCert := leaf("node1", false, time.Hour) // server authentication only
	stranger := otherLeaf("node1", true, time.Hour)

	var c peerCache
	for i := range 3 { // the first call verifies, the others may use the cache
		if !c.verified(mat, member, now) {
			t.Fatalf("call %d: a cluster certificate of this CA refused", i)
		}
		if c.verified(mat, apiCert, now) {
			t.Fatalf("call %d: an API certificate accepted", i)
		}
		if c.verified(mat, stranger, now) {
			t.Fatalf("call %d: a certificate of another CA accepted", i)
		}
	}
	if c.verified(mat, member, member.NotAfter.Add(time.Second)) {
		t.Fatal("an expired certificate accepted from the cache")
	}
	if c.verified(mat, member, member.NotBefore.Add(-time.Second)) {
		t.Fatal("a certificate accepted before its NotBefore")
	}
	// The cluster CA changes: what verified under the old one does not
	// count.
	if c.verified(other, member, now) {
		t.Fatal("a certificate of the old CA accepted after the CA changed")
	}
	if !c.verified(other, stranger, now) {
		t.Fatal("a certificate of the new CA refused")
	}
	// A full cache starts over rather than growing.
	for range maxPeerCerts + 1 {
		if !c.verified(other, otherLeaf("node2", true, time.Hour), now) {
			t.Fatal("a cluster certificate refused")
		}
	}
	if n := len(c.certs); n > maxPeerCerts {
		t.Fatalf("cache holds %d certificates, over %d", n, maxPeerCerts)
	}
}

// proxyDials sends n requests at once through a leader proxy and returns
// how many new connections to the leader the proxy dialled for them.
func proxyDials(t *testing.T, p http.Handler, n int) int {
	t.Helper()
	var dials atomic.Int32
	trace := &httptrace.ClientTrace{ConnectStart: func(string, string) { dials.Add(1) }}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			r := httptest.NewRequest(http.MethodGet, "/v1/sys/health", nil)
			r = r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
			w := httptest.NewRecorder()
			p.ServeHTTP(w, r)
			if w.Code == http.StatusServiceUnavailable && strings.Contains(w.Body.String(), "the leader did not answer") {
				t.Errorf("the leader did not answer: %s", w.Body)
			}
		})
	}
	wg.Wait()
	return int(dials.Load())
}
