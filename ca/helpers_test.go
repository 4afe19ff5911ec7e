package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/testutil"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
)

var bg = context.Background()

// fakeClock starts at the wall clock's time, so that openssl, which uses
// the wall clock, accepts what the CA signs; tests move it forward.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// stack is the real storage under a CA: a one-node durable raftstore, an
// unsealed barrier over it and a KMS.
type stack struct {
	store   *raftstore.Store
	barrier *kms.Barrier
	kms     *kms.KMS
	clock   *fakeClock
	leader  atomic.Bool
}

func newStack(t testing.TB) *stack {
	t.Helper()
	return newStackOn(t, testutil.SingleNode(t))
}

// newStackOn is a stack on store: a barrier unsealed with a key file and a
// kms, on a fake clock.
func newStackOn(t testing.TB, store *raftstore.Store) *stack {
	t.Helper()
	clock := newFakeClock()
	b, err := kms.NewBarrier(store, clock)
	must(t, err)
	keyFile := filepath.Join(t.TempDir(), "unseal.key")
	must(t, kms.GenerateKeyFile(keyFile))
	_, err = b.Init(bg, kms.SealConfig{KeyFile: keyFile})
	must(t, err)
	must(t, b.UnsealKeyFile(bg, keyFile))
	kcfg := kms.DefaultConfig()
	kcfg.Clock = clock
	k, err := kms.New(b, kcfg)
	must(t, err)
	s := &stack{store: store, barrier: b, kms: k, clock: clock}
	s.leader.Store(true)
	return s
}

// newCAArgs is the Config of a test CA over s; tests change what they test.
func (s *stack) newCAArgs() Config {
	cfg := DefaultConfig()
	cfg.Storage, cfg.KMS, cfg.Clock = s.barrier, s.kms, s.clock
	cfg.IsLeader = s.leader.Load
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

func (s *stack) newCA(t testing.TB, cfg Config) *CA {
	t.Helper()
	c, err := New(bg, cfg)
	must(t, err)
	return c
}

// newTestCA is an initialized CA on its own stack, with role "web"
// (example.com and its subdomains, 10.0.0.0/8, SPIFFE IDs of example.org).
func newTestCA(t testing.TB) (*CA, *stack) {
	t.Helper()
	s := newStack(t)
	c := s.newCA(t, s.newCAArgs())
	_, err := c.Init(bg, InitOptions{})
	must(t, err)
	_, err = c.WriteRole(bg, webRole())
	must(t, err)
	return c, s
}

func webRole() Role {
	return Role{
		Name: "web", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, AllowBareDomains: true,
		AllowedIPRanges: []string{"10.0.0.0/8"}, AllowedURISANs: []string{"spiffe://example.org/ns/*/sa/*"},
		MaxTTL: 72 * time.Hour, ServerFlag: true, ClientFlag: true,
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// csrFor makes a PEM CSR for key with the given names.
func csrFor(t testing.TB, key crypto.Signer, cn string, dns []string, ips []net.IP, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ips}
	for _, s := range uris {
		u, err := url.Parse(s)
		must(t, err)
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	return k
}

// countCerts is the size of the inventory.
func countCerts(t testing.TB, c *CA) int {
	t.Helper()
	n := 0
	f := Filter{Limit: 1000}
	for {
		page, err := c.List(bg, f)
		must(t, err)
		n += len(page.Certs)
		if page.Next == "" {
			return n
		}
		f.After = page.Next
	}
}

// verifyChain checks cert against chain [intermediate, root] with crypto/x509.
func verifyChain(t testing.TB, cert *x509.Certificate, chain []*x509.Certificate, at time.Time) {
	t.Helper()
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	for _, c := range chain[:len(chain)-1] {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("chain does not verify: %v", err)
	}
}

// openssl runs openssl with args in dir and returns its combined output;
// it skips the test when openssl is not installed.
func openssl(t testing.TB, dir string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// writePEM writes certificates to dir/name in PEM.
func writePEM(t testing.TB, dir, name string, certs ...*x509.Certificate) {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	must(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
}
