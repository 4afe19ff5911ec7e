package stepca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
)

func TestNonceRules(t *testing.T) {
	clock := &fakeClock{}
	key := bytes.Repeat([]byte{7}, 32)
	n := newNonces(key, time.Minute, clock)
	other := newNonces(bytes.Repeat([]byte{8}, 32), time.Minute, clock)
	elsewhere := newNonces(key, time.Minute, clock) // another node
	fresh := func() string {
		s, err := n.create()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := fresh()
	if err := elsewhere.use(s); err != nil {
		t.Fatalf("another node refused a nonce: %v", err)
	}
	if err := n.use(s); err != nil {
		t.Fatalf("first use: %v", err)
	}
	for name, tc := range map[string]struct {
		n     *nonces
		nonce string
	}{
		"replayed":        {n, s},
		"forged":          {other, fresh()},
		"malformed":       {n, "not-a-nonce"},
		"empty":           {n, ""},
		"truncated":       {n, fresh()[:20]},
		"flipped payload": {n, flip(fresh())},
	} {
		if err := tc.n.use(tc.nonce); err == nil {
			t.Errorf("%s nonce accepted", name)
		}
	}
	late := fresh()
	clock.Advance(2 * time.Minute)
	if err := n.use(late); err == nil {
		t.Error("expired nonce accepted")
	}
	if err := n.use(fresh()); err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	kept := len(n.used)
	n.mu.Unlock()
	if kept != 1 {
		t.Errorf("used set holds %d nonces, want only the live one", kept)
	}
}

func flip(s string) string {
	b := []byte(s)
	if b[3] == 'A' {
		b[3] = 'B'
	} else {
		b[3] = 'A'
	}
	return string(b)
}

// TestNoncesAcrossNodes spreads one client's requests over two nodes, as a
// load balancer would (#1855): no badNonce, and nonces cost no Raft write.
func TestNoncesAcrossNodes(t *testing.T) {
	const lb = "https://127.0.0.1:1" // the address clients use, of no node
	e := newEnv(t, func(c *Config) { c.BaseURL = lb })
	_, ts2 := e.start(t, e.cfg)

	var n atomic.Int64
	backends := []string{e.ts.Listener.Addr().String(), ts2.Listener.Addr().String()}
	var hits [2]atomic.Int64
	tr := e.ts.Client().Transport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		i := n.Add(1) % 2
		hits[i].Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, backends[i])
	}
	bad := &badNonceCounter{next: tr}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &acme.Client{Key: key, DirectoryURL: lb + "/acme/acme/directory", HTTPClient: &http.Client{Transport: bad}}
	ctx := context.Background()
	if _, err := c.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		chain, err := e.issue(ctx, c, "http-01", acme.DomainIDs("lb.test"))
		if err != nil {
			t.Fatalf("issuance %d through two nodes: %v", i, err)
		}
		e.ca.verify(t, chain)
	}
	if got := bad.n.Load(); got != 0 {
		t.Errorf("%d badNonce answers", got)
	}
	if hits[0].Load() < 5 || hits[1].Load() < 5 {
		t.Errorf("requests per node: %d, %d", hits[0].Load(), hits[1].Load())
	}

	// A nonce costs no write.
	before := e.store.AppliedIndex()
	for range 50 {
		resp, err := e.ts.Client().Head(e.ts.URL + "/acme/acme/new-nonce")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Replay-Nonce") == "" {
			t.Fatal("no Replay-Nonce")
		}
	}
	if after := e.store.AppliedIndex(); after != before {
		t.Errorf("50 nonces moved the applied index from %d to %d", before, after)
	}
}

// badNonceCounter counts the badNonce problems that pass by.
type badNonceCounter struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (b *badNonceCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := b.next.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		return resp, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Contains(body, []byte("badNonce")) {
		b.n.Add(1)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// TestNonceReplay sends one JWS twice to one node: the second is refused.
func TestNonceReplay(t *testing.T) {
	e := newEnv(t)
	c := e.newACMEClient(t)
	raw := e.rawClient(t, c)
	dir, err := c.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	body := raw.sign(t, dir.OrderURL, map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "replay.test"}}})
	if resp, b := raw.post(t, dir.OrderURL, body); resp.StatusCode != http.StatusCreated {
		t.Fatalf("first: %d %s", resp.StatusCode, b)
	}
	resp, b := raw.post(t, dir.OrderURL, body)
	problem(t, resp, b, http.StatusBadRequest, "badNonce")
}
