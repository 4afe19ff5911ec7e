package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-pki/custos/audit"
	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/internal/testutil"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"github.com/custos-pki/custos/secrets"
)

// testNode is a node whose services are a real, unsealed kms, auth and
// audit log (and, when asked for, CA and secret store) on a real one-node
// raftstore. The lifecycle methods of Node are not used by the routes
// under test; calling one panics.
type testNode struct {
	Node
	svc *Services
}

func (n *testNode) Services() (*Services, error) { return n.svc, nil }

// stackOptions picks the extras of a test stack.
type stackOptions struct {
	plainHTTP    bool  // serve plain HTTP rather than TLS
	maxBodyBytes int64 // Config.MaxBodyBytes; 0 is the default
	withCA       bool  // add a CA service, not initialized
	withSecrets  bool  // add a secret store
	limits       Limits
	// keys, when set, wraps the secret store's key manager.
	keys func(secrets.KeyManager) secrets.KeyManager
}

// testStack is an API server over real services, and a client for it.
type testStack struct {
	url       string
	client    *http.Client
	root      string
	store     *raftstore.Store
	barrier   *kms.Barrier
	kms       *kms.KMS
	auth      *auth.Service
	ca        *ca.CA
	secrets   *secrets.Store
	server    *Server
	auditPath string
}

func newTestStack(t testing.TB, opts stackOptions) *testStack {
	t.Helper()
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	store := testutil.SingleNode(t)
	b, err := kms.NewBarrier(store, nil)
	must(err)
	keyFile := filepath.Join(t.TempDir(), "unseal.key")
	must(kms.GenerateKeyFile(keyFile))
	_, err = b.Init(ctx, kms.SealConfig{KeyFile: keyFile})
	must(err)
	must(b.UnsealKeyFile(ctx, keyFile))
	k, err := kms.New(b, kms.DefaultConfig())
	must(err)
	acfg := auth.DefaultConfig()
	acfg.Storage = b
	as, err := auth.New(ctx, acfg)
	must(err)
	root, _, err := as.CreateRootToken(ctx, "test")
	must(err)
	lcfg := audit.DefaultConfig()
	lcfg.Path = filepath.Join(t.TempDir(), "audit.log")
	lcfg.HMACKey = make([]byte, 32)
	rand.Read(lcfg.HMACKey)
	al, err := audit.Open(lcfg)
	must(err)
	t.Cleanup(func() { al.Close() })
	s := &testStack{root: root, store: store, barrier: b, kms: k, auth: as, auditPath: lcfg.Path}
	if opts.withCA {
		ccfg := ca.DefaultConfig()
		ccfg.Storage, ccfg.KMS, ccfg.IsLeader = b, k, store.IsLeader
		ccfg.Logger = slog.New(slog.DiscardHandler)
		s.ca, err = ca.New(ctx, ccfg)
		must(err)
	}
	if opts.withSecrets {
		scfg := secrets.DefaultConfig()
		scfg.Storage, scfg.Keys = b, k
		if opts.keys != nil {
			scfg.Keys = opts.keys(k)
		}
		s.secrets, err = secrets.New(ctx, scfg)
		must(err)
	}
	s.server, err = New(Config{
		Node:         &testNode{svc: &Services{KMS: k, Auth: as, Audit: al, CA: s.ca, Secrets: s.secrets}},
		MaxBodyBytes: opts.maxBodyBytes,
		Logger:       slog.New(slog.DiscardHandler),
		Limits:       opts.limits,
	})
	must(err)
	ts := httptest.NewUnstartedServer(s.server)
	ts.Listener = s.server.Listener(ts.Listener)
	ts.Config.ConnContext = s.server.ConnContext
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	if opts.plainHTTP {
		ts.Start()
	} else {
		ts.StartTLS()
	}
	t.Cleanup(ts.Close)
	s.url, s.client = ts.URL, ts.Client()
	return s
}

// call sends body (JSON-encoded unless it is nil, a string or bytes) with
// token tok, if not empty, and decodes a 200 answer into out. It returns
// the status and the body.
func (s *testStack) call(t *testing.T, tok, method, path string, body, out any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set(TokenHeader, tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, raw
}
