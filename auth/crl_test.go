package auth

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/testutil"
	"github.com/custos-pki/custos/internal/testutil/testca"
)

// crlServer serves over HTTPS whatever CRL the test sets, and counts the
// fetches.
type crlServer struct {
	*httptest.Server
	mu      sync.Mutex
	body    []byte
	fetches atomic.Int64
}

func newCRLServer(t *testing.T) *crlServer {
	cs := &crlServer{}
	cs.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		cs.fetches.Add(1)
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if cs.body == nil {
			http.Error(w, "no CRL", http.StatusNotFound)
			return
		}
		_, _ = w.Write(cs.body)
	}))
	t.Cleanup(cs.Close)
	return cs
}

func (cs *crlServer) set(b []byte) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.body = b
}

// makeCRL is a CRL of ca listing serials, valid for validity from now.
func makeCRL(t *testing.T, ca *testca.CA, now time.Time, validity time.Duration, serials ...*big.Int) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(now.Unix()), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(validity)}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// A role that names a CRL refuses the certificates it lists, fetches it
// once until its nextUpdate, and refuses every login while the CRL cannot
// be used.
func TestLoginWithCertChecksTheRolesCRL(t *testing.T) {
	ctx := context.Background()
	cs := newCRLServer(t)
	clock := newFakeClock()
	cfg := DefaultConfig()
	cfg.Storage, cfg.Clock, cfg.CRLClient, cfg.MaxCRLSize = testutil.SingleNode(t), clock, cs.Client(), 64<<10
	s, err := New(ctx, cfg)
	wantErr(t, err, nil)
	ca, other := testCA(t, "workload CA"), testCA(t, "other CA")
	wantErr(t, s.WriteCertRole(ctx, CertRole{Name: "web", CACertificates: pemOf(ca.Cert), CRLURL: cs.URL + "/ca.crl"}), nil)
	good, _ := issue(t, ca.Cert, ca.Key, certOpts{cn: "web-1"})
	bad, _ := issue(t, ca.Cert, ca.Key, certOpts{cn: "web-2"})
	login := func(c *x509.Certificate) error {
		_, _, err := s.LoginWithCert(ctx, []*x509.Certificate{c}, "web")
		return err
	}

	// No CRL to be had: nobody logs in, and a burst fetches once.
	for range 3 {
		if err := login(good); err == nil || !strings.Contains(err.Error(), "status 404") {
			t.Fatalf("login without a CRL: %v", err)
		}
	}
	if n := cs.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for failing logins within %v", n, crlRetry)
	}
	clock.Add(crlRetry)

	cs.set(makeCRL(t, ca, clock.Now(), time.Hour, bad.SerialNumber))
	wantErr(t, login(good), nil)
	wantErr(t, login(bad), ErrPermissionDenied)
	wantErr(t, login(good), nil)
	if n := cs.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (cached until nextUpdate)", n)
	}

	// Past nextUpdate it is fetched again; a stale one is refused.
	cs.set(makeCRL(t, ca, clock.Now(), time.Minute))
	clock.Add(time.Hour)
	if err := login(good); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("login with an expired CRL: %v", err)
	}
	clock.Add(crlRetry)
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"signed by another CA", makeCRL(t, other, clock.Now(), time.Hour), "not signed"},
		{"not a CRL", []byte("hello"), "does not parse"},
		{"too large", make([]byte, 65<<10), "larger than"},
	} {
		cs.set(tc.body)
		if err := login(good); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: %v", tc.name, err)
		}
		clock.Add(crlRetry)
	}
	cs.set(makeCRL(t, ca, clock.Now(), time.Hour, bad.SerialNumber))
	wantErr(t, login(good), nil)

	for _, u := range []string{"ftp://x/crl", "/relative", "https://user:pw@x/crl"} {
		wantErr(t, s.WriteCertRole(ctx, CertRole{Name: "bad", CACertificates: pemOf(ca.Cert), CRLURL: u}), ErrInvalid)
	}
}
