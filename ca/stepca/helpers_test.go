package stepca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/testutil"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"github.com/miekg/dns"
)

// newBarrier is a real barrier, initialised with a key file and unsealed,
// over a one-node durable raftstore.
func newBarrier(t testing.TB) (*raftstore.Store, *kms.Barrier) {
	t.Helper()
	ctx := context.Background()
	store := testutil.SingleNode(t)
	b, err := kms.NewBarrier(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "unseal.key")
	if err := kms.GenerateKeyFile(keyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Init(ctx, kms.SealConfig{KeyFile: keyFile}); err != nil {
		t.Fatal(err)
	}
	if err := b.UnsealKeyFile(ctx, keyFile); err != nil {
		t.Fatal(err)
	}
	return store, b
}

// fakeClock is the wall clock moved by Advance.
type fakeClock struct{ off atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// testCA is a root and an intermediate whose keys live in the kms.
type testCA struct {
	k           *kms.KMS
	root, inter *x509.Certificate
}

func newTestCA(t testing.TB, b *kms.Barrier) *testCA {
	t.Helper()
	ctx := context.Background()
	k, err := kms.New(b, kms.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"test-root", "test-int"} {
		if _, err := k.CreateKey(ctx, name, kms.KeyOptions{Type: kms.TypeECDSAP256}); err != nil {
			t.Fatal(err)
		}
	}
	rootSigner, err := k.Signer(ctx, "test-root", 0)
	if err != nil {
		t.Fatal(err)
	}
	intSigner, err := k.Signer(ctx, "test-int", 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rootTpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "custos test root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * 365 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	root := mustCert(t, rootTpl, rootTpl, rootSigner.Public(), rootSigner)
	intTpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "custos test intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * 180 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	inter := mustCert(t, intTpl, root, intSigner.Public(), rootSigner)
	return &testCA{k: k, root: root, inter: inter}
}

func mustCert(t testing.TB, tpl, parent *x509.Certificate, pub crypto.PublicKey, s crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, pub, s)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *testCA) issuer(ctx context.Context) (crypto.Signer, []*x509.Certificate, error) {
	s, err := c.k.Signer(ctx, "test-int", 0)
	return s, []*x509.Certificate{c.inter, c.root}, err
}

func (c *testCA) roots(context.Context) ([]*x509.Certificate, error) {
	return []*x509.Certificate{c.root}, nil
}

// verify checks that chain[0] verifies to the root through chain[1:], with
// crypto/x509 and, where it is installed, openssl.
func (c *testCA) verify(t testing.TB, chain []*x509.Certificate) {
	t.Helper()
	if len(chain) < 2 {
		t.Fatalf("chain has %d certificates, want the leaf and the intermediate", len(chain))
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(c.root)
	for _, ic := range chain[1:] {
		inters.AddCert(ic)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters}); err != nil {
		t.Fatalf("chain does not verify: %v", err)
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		return
	}
	dir := t.TempDir()
	write := func(name string, certs ...*x509.Certificate) string {
		var b strings.Builder
		for _, c := range certs {
			_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	out, err := exec.Command(openssl, "verify", "-CAfile", write("root.pem", c.root),
		"-untrusted", write("chain.pem", chain[1:]...), write("leaf.pem", chain[0])).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify: %v: %s", err, out)
	}
}

// recorder is an inventory in memory.
type recorder struct {
	mu      sync.Mutex
	certs   map[string]recorded // serial -> record
	revoked map[string]int      // serial -> reason code
	fail    atomic.Bool
}

type recorded struct {
	cert         *x509.Certificate
	source, role string
}

var (
	_ Recorder           = (*recorder)(nil)
	_ RevocationRecorder = (*recorder)(nil)
	_ RevocationChecker  = (*recorder)(nil)
	_ CertificateReader  = (*recorder)(nil)
)

func newRecorder() *recorder {
	return &recorder{certs: map[string]recorded{}, revoked: map[string]int{}}
}

func (r *recorder) Record(_ context.Context, c *x509.Certificate, source, role string) error {
	if r.fail.Load() {
		return errTestRecorder
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.certs[c.SerialNumber.String()] = recorded{cert: c, source: source, role: role}
	return nil
}

func (r *recorder) RecordRevocation(_ context.Context, serial *big.Int, reason int, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revoked[serial.String()] = reason
	return nil
}

func (r *recorder) IsRevoked(_ context.Context, serial *big.Int) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.revoked[serial.String()]
	return ok, nil
}

func (r *recorder) Certificate(_ context.Context, serial *big.Int) (*x509.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.certs[serial.String()]
	if !ok {
		return nil, ErrNotRecorded
	}
	return c.cert, nil
}

func (r *recorder) get(serial string) (recorded, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.certs[serial]
	return c, ok
}

func (r *recorder) revocation(serial string) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reason, ok := r.revoked[serial]
	return reason, ok
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.certs)
}

type testError string

func (e testError) Error() string { return string(e) }

const errTestRecorder = testError("recorder refuses")

// challenges answers http-01 on one port, tls-alpn-01 on another, and DNS
// (A records to 127.0.0.1 for every name under .test, and TXT records) on a
// third, all on 127.0.0.1.
type challenges struct {
	mu   sync.Mutex
	http map[string]string           // token -> key authorization
	alpn map[string]*tls.Certificate // name -> challenge certificate
	txt  map[string][]string         // FQDN -> values

	httpPort, tlsPort int
	dnsAddr           string
}

func newChallenges(t testing.TB) *challenges {
	t.Helper()
	ch := &challenges{http: map[string]string{}, alpn: map[string]*tls.Certificate{}, txt: map[string][]string{}}

	hl := listen(t)
	ch.httpPort = hl.Addr().(*net.TCPAddr).Port
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch.mu.Lock()
		ka, ok := ch.http[strings.TrimPrefix(r.URL.Path, "/.well-known/acme-challenge/")]
		ch.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(ka))
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(hl) }()
	t.Cleanup(func() { _ = hs.Close() })

	tl := listen(t)
	ch.tlsPort = tl.Addr().(*net.TCPAddr).Port
	tlsLn := tls.NewListener(tl, &tls.Config{
		NextProtos: []string{"acme-tls/1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			ch.mu.Lock()
			defer ch.mu.Unlock()
			return ch.alpn[hello.ServerName], nil
		},
	})
	go func() {
		for {
			c, err := tlsLn.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				_ = c.Close()
			}()
		}
	}()
	t.Cleanup(func() { _ = tlsLn.Close() })

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch.dnsAddr = pc.LocalAddr().String()
	ds := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(ch.serveDNS)}
	go func() { _ = ds.ActivateAndServe() }()
	t.Cleanup(func() { _ = ds.Shutdown() })
	return ch
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (ch *challenges) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	for _, q := range req.Question {
		name := strings.ToLower(q.Name)
		if !strings.HasSuffix(name, ".test.") {
			m.Rcode = dns.RcodeNameError
			continue
		}
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 1}
		switch q.Qtype {
		case dns.TypeA:
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IPv4(127, 0, 0, 1)})
		case dns.TypeTXT:
			hdr.Rrtype = dns.TypeTXT
			ch.mu.Lock()
			for _, v := range ch.txt[name] {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: []string{v}})
			}
			ch.mu.Unlock()
		}
	}
	_ = w.WriteMsg(m)
}

func (ch *challenges) setHTTP(token, keyAuth string) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.http[token] = keyAuth
}

func (ch *challenges) setALPN(name string, c *tls.Certificate) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.alpn[name] = c
}

func (ch *challenges) setTXT(fqdn, value string, add bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	fqdn = strings.ToLower(fqdn)
	if add {
		ch.txt[fqdn] = append(ch.txt[fqdn], value)
		return
	}
	vs := ch.txt[fqdn][:0:0]
	for _, v := range ch.txt[fqdn] {
		if v != value {
			vs = append(vs, v)
		}
	}
	ch.txt[fqdn] = vs
}

// env is one custos node's step-ca, served over TLS by httptest, with the
// challenge servers its validator is pointed at.
type env struct {
	store *raftstore.Store
	b     *kms.Barrier
	ca    *testCA
	rec   *recorder
	ch    *challenges
	clock *fakeClock
	srv   *Server
	ts    *httptest.Server
	cfg   Config
}

const testJWKPassword = "correct horse battery staple"

// withJWK adds the JWK provisioner (its PBES2-encrypted key costs seconds
// under the race detector, so only the tests of step's API have it).
func withJWK(c *Config) { c.JWKProvisioner, c.JWKPassword = "custos-jwk", []byte(testJWKPassword) }

func newEnv(t testing.TB, opts ...func(*Config)) *env {
	t.Helper()
	e := &env{rec: newRecorder(), clock: &fakeClock{}}
	e.store, e.b = newBarrier(t)
	e.ca = newTestCA(t, e.b)
	e.ch = newChallenges(t)
	e.cfg = DefaultConfig()
	e.cfg.Storage = e.b
	e.cfg.Issuer = e.ca.issuer
	e.cfg.Roots = e.ca.roots
	e.cfg.Recorder = e.rec
	e.cfg.DNSResolver = e.ch.dnsAddr
	e.cfg.HTTP01Port, e.cfg.TLSALPN01Port = e.ch.httpPort, e.ch.tlsPort
	e.cfg.Clock = e.clock
	for _, o := range opts {
		o(&e.cfg)
	}
	e.srv, e.ts = e.start(t, e.cfg)
	return e
}

// start runs a Server for cfg (a node) behind a new TLS test server that
// asks for client certificates (step's /renew authenticates with them).
func (e *env) start(t testing.TB, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	ts.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	if cfg.BaseURL == "" {
		cfg.BaseURL = ts.URL
	}
	srv, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	ts.Config.Handler = srv.Handler()
	return srv, ts
}

func (e *env) directory() string { return e.ts.URL + "/acme/acme/directory" }
