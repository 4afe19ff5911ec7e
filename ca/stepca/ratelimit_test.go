package stepca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/clientip"
	"github.com/custos-pki/custos/internal/ratelimit"
	"golang.org/x/crypto/acme"
)

// postWith sends a JWS with extra headers.
func (r *rawClient) postWith(t testing.TB, url string, body []byte, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/jose+json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// rateLimited checks an RFC 8555 rateLimited answer: 429, a problem
// document, a Retry-After of about want, and a fresh nonce.
func rateLimited(t testing.TB, resp *http.Response, body []byte, want time.Duration) {
	t.Helper()
	problem(t, resp, body, http.StatusTooManyRequests, "rateLimited")
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > want+time.Second {
		t.Errorf("Retry-After %q, want whole seconds up to %v", resp.Header.Get("Retry-After"), want)
	}
	if resp.Header.Get("Replay-Nonce") == "" {
		t.Error("no Replay-Nonce on a rateLimited answer")
	}
}

// newAccountClient is a raw client for a fresh key, not registered.
func (e *env) newAccountClient(t testing.TB) *rawClient {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &rawClient{hc: e.ts.Client(), key: key, nonceURL: e.ts.URL + "/acme/acme/new-nonce"}
}

// TestACMENewAccountFloodFromOneAddress: past the per-address limit on new
// accounts a client gets rateLimited with Retry-After, whatever address it
// claims in the client-address header; the bucket refills with time.
func TestACMENewAccountFloodFromOneAddress(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.RateLimits.NewAccountPerIP = ratelimit.Limit{Count: 3, Period: 3 * time.Hour}
	})
	for range 3 {
		e.newACMEClient(t) // registers with x/crypto/acme
	}
	url := e.ts.URL + "/acme/acme/new-account"
	for i := range 5 {
		raw := e.newAccountClient(t)
		resp, body := raw.postWith(t, url, raw.sign(t, url, map[string]any{"termsOfServiceAgreed": true}),
			map[string]string{clientip.Header: "10.9.9." + strconv.Itoa(i)})
		rateLimited(t, resp, body, time.Hour)
	}
	// A known key's lookup is refused too while the bucket is empty, but
	// the refusals were not charged: one period/count later one account
	// can be made, and only one.
	e.clock.Advance(time.Hour)
	raw := e.newAccountClient(t)
	if resp, body := raw.post(t, url, raw.sign(t, url, map[string]any{"termsOfServiceAgreed": true})); resp.StatusCode != http.StatusCreated {
		t.Fatalf("after an hour: %d %s", resp.StatusCode, body)
	}
	raw = e.newAccountClient(t)
	resp, body := raw.post(t, url, raw.sign(t, url, map[string]any{"termsOfServiceAgreed": true}))
	rateLimited(t, resp, body, time.Hour)
}

// TestACMENewOrderLimitPerAccount: an account past its order limit gets
// rateLimited; a request that creates no order costs nothing; another
// account from the same address is not affected.
func TestACMENewOrderLimitPerAccount(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.RateLimits.NewOrderPerAccount = ratelimit.Limit{Count: 2, Period: time.Hour}
	})
	ctx := context.Background()
	c := e.newACMEClient(t)
	raw := e.rawClient(t, c)
	dir, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Refused by step-ca (no identifiers): not charged.
	for range 3 {
		resp, body := raw.post(t, dir.OrderURL, raw.sign(t, dir.OrderURL, map[string]any{"identifiers": []any{}}))
		problem(t, resp, body, http.StatusBadRequest, "malformed")
	}
	for i := range 2 {
		if _, err := c.AuthorizeOrder(ctx, acme.DomainIDs("o"+strconv.Itoa(i)+".test")); err != nil {
			t.Fatalf("order %d within the limit: %v", i, err)
		}
	}
	order := map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "third.test"}}}
	resp, body := raw.post(t, dir.OrderURL, raw.sign(t, dir.OrderURL, order))
	rateLimited(t, resp, body, 30*time.Minute)

	other := e.newACMEClient(t)
	if _, err := other.AuthorizeOrder(ctx, acme.DomainIDs("other.test")); err != nil {
		t.Fatalf("another account from the same address: %v", err)
	}
}

// TestACMEFailedValidationsLimit: a validation that fails counts against
// the account; past the limit it can neither order nor ask for another
// validation until the bucket refills.
func TestACMEFailedValidationsLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.RateLimits.FailedValidationsPerAccount = ratelimit.Limit{Count: 1, Period: time.Hour}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.newACMEClient(t)
	raw := e.rawClient(t, c)
	dir, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order, err := c.AuthorizeOrder(ctx, acme.DomainIDs("fail.test", "fail2.test"))
	if err != nil {
		t.Fatal(err)
	}
	var chals []*acme.Challenge
	for _, u := range order.AuthzURLs {
		z, err := c.GetAuthorization(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range z.Challenges {
			if ch.Type == "http-01" {
				chals = append(chals, ch)
				e.ch.setHTTP(ch.Token, "not-the-key-authorization")
			}
		}
	}
	failed, err := c.Accept(ctx, chals[0])
	if err != nil {
		t.Fatal(err)
	}
	if failed.Status != acme.StatusInvalid || failed.Error == nil {
		t.Fatalf("the failed challenge: %+v", failed)
	}
	resp, body := raw.post(t, chals[1].URI, raw.sign(t, chals[1].URI, map[string]any{}))
	rateLimited(t, resp, body, time.Hour)
	newOrder := map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "again.test"}}}
	resp, body = raw.post(t, dir.OrderURL, raw.sign(t, dir.OrderURL, newOrder))
	rateLimited(t, resp, body, time.Hour)

	e.clock.Advance(time.Hour)
	if _, err := c.AuthorizeOrder(ctx, acme.DomainIDs("again.test")); err != nil {
		t.Fatalf("an hour later: %v", err)
	}
}

// TestACMERequestsPerAddress: directory and nonce requests count too.
func TestACMERequestsPerAddress(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.RateLimits.RequestsPerIP = ratelimit.Limit{Count: 5, Period: time.Second, Burst: 20}
	})
	hc := e.ts.Client()
	limited := 0
	for range 30 {
		resp, err := hc.Head(e.ts.URL + "/acme/acme/new-nonce")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
		}
	}
	if limited < 10 {
		t.Fatalf("%d of 30 nonce requests limited, want at least the 10 past the burst", limited)
	}
}

// TestNonceSetBoundedUnderBadSignatures floods the server with JWS that
// carry fresh nonces and bad signatures (step-ca consumes the nonce before
// it checks the signature): the used set stays within its bound, no nonce
// can be replayed, and honest requests work once the flood's second has
// passed.
func TestNonceSetBoundedUnderBadSignatures(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RateLimits.RequestsPerIP = ratelimit.Limit{} })
	const bound = 20
	e.srv.acmeDB.nonces.max = bound
	ctx := context.Background()
	c := e.newACMEClient(t)
	dir, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	good := e.rawClient(t, c)
	early := good.sign(t, dir.OrderURL, map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "early.test"}}})
	if resp, b := good.post(t, dir.OrderURL, early); resp.StatusCode != http.StatusCreated {
		t.Fatalf("before the flood: %d %s", resp.StatusCode, b)
	}
	bad := e.rawClient(t, c)
	bad.badSig = true
	for range 5 * bound {
		resp, _ := bad.post(t, dir.OrderURL, bad.sign(t, dir.OrderURL, map[string]any{}))
		if resp.StatusCode < 400 {
			t.Fatalf("a bad signature got %d", resp.StatusCode)
		}
	}
	n := e.srv.acmeDB.nonces
	n.mu.Lock()
	size, heapSize := len(n.used), len(n.byExp)
	n.mu.Unlock()
	if size > bound || heapSize != size {
		t.Fatalf("used set holds %d nonces (heap %d), bound %d", size, heapSize, bound)
	}
	// The first nonce was dropped from the set: it must not work again.
	resp, b := good.post(t, dir.OrderURL, early)
	problem(t, resp, b, http.StatusBadRequest, "badNonce")

	e.clock.Advance(2 * time.Second)
	fresh := good.sign(t, dir.OrderURL, map[string]any{"identifiers": []map[string]string{{"type": "dns", "value": "after.test"}}})
	if resp, b := good.post(t, dir.OrderURL, fresh); resp.StatusCode != http.StatusCreated {
		t.Fatalf("after the flood: %d %s", resp.StatusCode, b)
	}
	resp, b = good.post(t, dir.OrderURL, fresh)
	problem(t, resp, b, http.StatusBadRequest, "badNonce")
}
