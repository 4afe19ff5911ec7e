package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/ca/stepca"
)

// stepNode is a test node with step-ca running; proxy, when set, is the
// leader it forwards ACME to (a follower), else it is the leader.
type stepNode struct {
	*testNode
	proxy http.Handler
}

func (n *stepNode) LeaderProxy(context.Context) (http.Handler, error) { return n.proxy, nil }

// newStepServer serves the stack's services with step-ca, over an
// initialised CA, as a node (a follower forwarding to leader if not nil).
func newStepServer(t *testing.T, s *testStack, leader http.Handler) (*httptest.Server, *stepca.Server) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.ca.Roots(ctx); err != nil {
		if _, err := s.ca.Init(ctx, ca.InitOptions{CommonName: "Test"}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := stepca.DefaultConfig()
	cfg.Storage, cfg.Issuer, cfg.Roots, cfg.Recorder = s.barrier, s.ca.Issuer, s.ca.Roots, s.ca
	step, err := stepca.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = step.Close() })
	svc := *s.server.node.(*testNode).svc
	svc.Step, svc.ACME = step.Handler(), step
	srv, err := New(Config{Node: &stepNode{testNode: &testNode{svc: &svc}, proxy: leader}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv)
	t.Cleanup(ts.Close)
	return ts, step
}

// bigBody is n bytes, streamed.
func bigBody(n int64) io.Reader { return io.LimitReader(zeros{}, n) }

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '0'
	}
	return len(p), nil
}

// TestBodyLimitEveryPrefix: an oversized body gets 413 on every path
// prefix (the ACME malformed problem under /acme/), whether or not it
// says its length, and nothing is written.
func TestBodyLimitEveryPrefix(t *testing.T) {
	s := newTestStack(t, stackOptions{withCA: true})
	ts, _ := newStepServer(t, s, nil)
	cases := []struct {
		method, path string
		acme         bool
	}{
		{"POST", "/acme/acme/new-account", true},
		{"POST", "/acme/acme/new-order", true},
		{"GET", "/acme/acme/directory", true},
		{"POST", "/1.0/sign", false},
		{"POST", "/sign", false},
		{"POST", "/renew", false},
		{"POST", "/rekey", false},
		{"POST", "/revoke", false},
		{"GET", "/version", false},
		{"GET", "/roots", false},
		{"POST", "/v1/sys/init", false},
		{"PUT", "/v1/sys/policies/big", false},
		{"POST", "/v1/auth/token/create", false},
		{"POST", "/v1/ca/acme/eab", false},
		{"POST", "/v1/kms/keys/big", false},
		{"POST", "/v1/ca/ocsp", false},
	}
	for _, tc := range cases {
		for _, chunked := range []bool{false, true} {
			name := tc.method + " " + tc.path
			if chunked {
				name += " chunked"
			}
			t.Run(name, func(t *testing.T) {
				before := s.store.Status()
				req, err := http.NewRequest(tc.method, ts.URL+tc.path, bigBody(3<<20))
				if err != nil {
					t.Fatal(err)
				}
				if !chunked {
					req.ContentLength = 3 << 20
				}
				req.Header.Set(TokenHeader, s.root)
				req.Header.Set("Content-Type", "application/jose+json")
				resp, err := ts.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				if tc.acme {
					var p struct{ Type string }
					_ = json.Unmarshal(raw, &p)
					if resp.StatusCode != http.StatusBadRequest || p.Type != "urn:ietf:params:acme:error:malformed" ||
						resp.Header.Get("Content-Type") != "application/problem+json" {
						t.Errorf("%d %s %s, want 400 and the malformed problem", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
					}
				} else {
					var e errorBody
					_ = json.Unmarshal(raw, &e)
					if resp.StatusCode != http.StatusRequestEntityTooLarge || e.Error.Error == nil || e.Error.Code != CodeBodyTooLarge {
						t.Errorf("%d %s, want 413 %s", resp.StatusCode, raw, CodeBodyTooLarge)
					}
				}
				if after := s.store.Status(); after.LastIndex != before.LastIndex {
					t.Errorf("the raft log grew from %d to %d", before.LastIndex, after.LastIndex)
				}
			})
		}
	}
	if st, _ := s.call(t, s.root, "GET", "/v1/sys/policies/big", nil, nil); st != http.StatusNotFound {
		t.Errorf("policy big: %d, want 404", st)
	}
	// Bodies within the limit still reach step-ca.
	resp, err := ts.Client().Post(ts.URL+"/sign", "application/json", strings.NewReader(`{"csr":"junk"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("/sign with a small bad body: %d, want step-ca's 400", resp.StatusCode)
	}
}

// TestBodyLimitBeforeForwarding: a follower refuses an oversized ACME body
// itself, and forwards nothing to the leader; a small one it forwards.
func TestBodyLimitBeforeForwarding(t *testing.T) {
	var hits, got atomic.Int64
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		n, _ := io.Copy(io.Discard, r.Body)
		got.Add(n)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(leader.Close)
	u, _ := url.Parse(leader.URL)
	s := newTestStack(t, stackOptions{withCA: true})
	ts, _ := newStepServer(t, s, httputil.NewSingleHostReverseProxy(u))

	for _, chunked := range []bool{false, true} {
		req, _ := http.NewRequest("POST", ts.URL+"/acme/acme/new-order", bigBody(1<<20))
		if !chunked {
			req.ContentLength = 1 << 20
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("chunked %v: %d, want 400", chunked, resp.StatusCode)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the leader got %d requests (%d bytes)", n, got.Load())
	}
	resp, err := ts.Client().Post(ts.URL+"/acme/acme/new-order", "application/jose+json", strings.NewReader(`{"protected":""}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if hits.Load() != 1 || got.Load() != int64(len(`{"protected":""}`)) {
		t.Errorf("a small body: %d requests, %d bytes forwarded", hits.Load(), got.Load())
	}
}
