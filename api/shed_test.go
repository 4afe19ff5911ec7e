package api

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/clientip"
	"github.com/custos-pki/custos/internal/ratelimit"
)

// send makes one request with hc and returns the response with its body
// read.
func send(t *testing.T, hc *http.Client, method, url string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, raw
}

// wantRefusal checks a load-shedding answer: status, error code and a
// Retry-After of whole seconds.
func wantRefusal(t *testing.T, resp *http.Response, raw []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, raw)
	}
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Error.Code != code {
		t.Fatalf("body %s, want error code %s", raw, code)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q, want whole seconds", resp.Header.Get("Retry-After"))
	}
}

func auditLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// TestPublicRoutesAreLimitedPerClient floods an unauthenticated route that
// does work: past the limit the client gets 429 with Retry-After, the
// refusals are not audited, a spoofed client-address header changes
// nothing, and the cheap public reads are not counted.
func TestPublicRoutesAreLimitedPerClient(t *testing.T) {
	s := newTestStack(t, stackOptions{withCA: true, limits: Limits{PublicPerIP: ratelimit.Limit{Count: 3, Period: time.Hour}}})
	login := s.url + "/v1/auth/cert/login"
	for i := range 3 {
		resp, raw := send(t, s.client, "POST", login, strings.NewReader(`{}`), map[string]string{clientip.Header: "10.0.0." + strconv.Itoa(i)})
		if resp.StatusCode == http.StatusTooManyRequests {
			t.Fatalf("request %d within the limit refused: %s", i, raw)
		}
	}
	before := auditLines(t, s.auditPath)
	for i := range 10 {
		// Each claims another address: the header from a client that is
		// not a cluster member is ignored.
		resp, raw := send(t, s.client, "POST", login, strings.NewReader(`{}`), map[string]string{clientip.Header: "10.1.0." + strconv.Itoa(i)})
		wantRefusal(t, resp, raw, http.StatusTooManyRequests, CodeRateLimited)
	}
	if after := auditLines(t, s.auditPath); after != before {
		t.Errorf("refusals wrote %d audit lines", after-before)
	}
	for range 10 {
		if resp, raw := send(t, s.client, "GET", s.url+"/v1/ca/roots", nil, nil); resp.StatusCode == http.StatusTooManyRequests {
			t.Fatalf("a cheap public read was limited: %s", raw)
		}
	}
}

// TestClientAddressHeaderOnlyFromTrustedPeers: the header counts only when
// TrustedPeer vouches for the TLS peer.
func TestClientAddressHeaderOnlyFromTrustedPeers(t *testing.T) {
	member := selfSigned(t, "node2")
	trusted := func(cs *tls.ConnectionState) bool {
		return len(cs.PeerCertificates) > 0 && cs.PeerCertificates[0].Equal(member.Leaf)
	}
	s := newTestStack(t, stackOptions{limits: Limits{PublicPerIP: ratelimit.Limit{Count: 1, Period: time.Hour}, TrustedPeer: trusted}})
	tr := s.client.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{member}
	proxy := &http.Client{Transport: tr}
	outsider := selfSigned(t, "node2") // the same name, another key
	tr2 := s.client.Transport.(*http.Transport).Clone()
	tr2.TLSClientConfig.Certificates = []tls.Certificate{outsider}
	impostor := &http.Client{Transport: tr2}

	login := s.url + "/v1/auth/cert/login"
	for i := range 5 {
		resp, raw := send(t, proxy, "POST", login, strings.NewReader(`{}`), map[string]string{clientip.Header: "192.0.2." + strconv.Itoa(i)})
		if resp.StatusCode == http.StatusTooManyRequests {
			t.Fatalf("a member's proxy naming client %d was limited as one client: %s", i, raw)
		}
	}
	for _, hc := range []*http.Client{impostor, s.client} {
		send(t, hc, "POST", login, strings.NewReader(`{}`), map[string]string{clientip.Header: "198.51.100.1"})
		resp, raw := send(t, hc, "POST", login, strings.NewReader(`{}`), map[string]string{clientip.Header: "198.51.100.2"})
		wantRefusal(t, resp, raw, http.StatusTooManyRequests, CodeRateLimited)
	}
}

// TestInFlightCap holds one request open (its body is still coming) on a
// node that serves one at a time: the next gets 503 with Retry-After.
func TestInFlightCap(t *testing.T) {
	s := newTestStack(t, stackOptions{limits: Limits{MaxInFlight: 1}})
	pr, pw := io.Pipe()
	done := make(chan int)
	go func() {
		req, _ := http.NewRequest("POST", s.url+"/v1/auth/cert/login", pr)
		resp, err := s.client.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	if _, err := pw.Write([]byte(`{"role":`)); err != nil {
		t.Fatal(err)
	}
	// The first request reaches the handler at some point: from then on,
	// every other request is refused.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, raw := send(t, s.client, "GET", s.url+"/v1/no-such-route", nil, nil)
		if resp.StatusCode != http.StatusNotFound {
			wantRefusal(t, resp, raw, http.StatusServiceUnavailable, CodeUnavailable)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a second request was served while one was in flight")
		}
		time.Sleep(20 * time.Millisecond)
	}
	pw.Write([]byte(`"x"}`))
	pw.Close()
	if status := <-done; status == 0 || status == http.StatusServiceUnavailable {
		t.Fatalf("the request in flight ended with %d", status)
	}
	if resp, raw := send(t, s.client, "GET", s.url+"/v1/no-such-route", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("after the slot was freed: %d %s", resp.StatusCode, raw)
	}
}

// TestConnectionCap: with a cap of one connection, a second is answered
// 503 and closed, and a third while two are open is closed unanswered.
func TestConnectionCap(t *testing.T) {
	s := newTestStack(t, stackOptions{limits: Limits{MaxConnections: 1}})
	newClient := func() *http.Client {
		return &http.Client{Transport: s.client.Transport.(*http.Transport).Clone(), Timeout: 30 * time.Second}
	}
	// The server counts a connection closed only once it has seen it
	// close: wait for its count before each step, so that a connection the
	// stack's setup left behind does not shift the cap under load.
	s.client.CloseIdleConnections()
	waitConns(t, s, 0)
	first := newClient()
	if resp, raw := send(t, first, "GET", s.url+"/v1/no-such-route", nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("first connection: %d %s", resp.StatusCode, raw)
	}
	waitConns(t, s, 1)
	resp, raw := send(t, newClient(), "GET", s.url+"/v1/no-such-route", nil, nil)
	wantRefusal(t, resp, raw, http.StatusServiceUnavailable, CodeUnavailable)
	if !resp.Close {
		t.Error("the connection over the cap was not closed")
	}
	waitConns(t, s, 1)
	// Hold a second connection open without a request: a third is closed.
	tcfg := s.client.Transport.(*http.Transport).TLSClientConfig.Clone()
	held, err := tls.Dial("tcp", strings.TrimPrefix(s.url, "https://"), tcfg)
	if err != nil {
		t.Fatal(err)
	}
	waitConns(t, s, 2)
	req, _ := http.NewRequest("GET", s.url+"/v1/no-such-route", nil)
	if resp, err := newClient().Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a connection past twice the cap was served: %d", resp.StatusCode)
	}
	held.Close()
	first.CloseIdleConnections()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := newClient().Get(s.url + "/v1/no-such-route")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNotFound {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("closed connections were not given back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// waitConns waits until the server counts n open connections.
func waitConns(t *testing.T, s *testStack, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.server.shed.conns.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("the server counts %d open connections, want %d", s.server.shed.conns.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
