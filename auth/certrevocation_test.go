package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/testutil"
	"github.com/custos-pki/custos/raftstore"
)

// revocationList is a RevocationChecker over a set of serials; err, when
// set, is what every check fails with.
type revocationList struct {
	mu      sync.Mutex
	serials map[string]bool
	err     error
	asked   int
}

func (l *revocationList) Revoked(_ context.Context, cert *x509.Certificate) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked++
	return l.serials[cert.SerialNumber.Text(16)], l.err
}

func TestLoginWithCertAsksTheRevocationChecker(t *testing.T) {
	ctx := context.Background()
	rl := &revocationList{serials: map[string]bool{}}
	cfg := DefaultConfig()
	cfg.Storage, cfg.Revocation = testutil.SingleNode(t), rl
	s, err := New(ctx, cfg)
	wantErr(t, err, nil)
	ca := testCA(t, "workload CA")
	wantErr(t, s.WriteCertRole(ctx, CertRole{Name: "web", CACertificates: pemOf(ca.Cert), AllowedCommonNames: []string{"web-*"}}), nil)
	good, _ := issue(t, ca.Cert, ca.Key, certOpts{cn: "web-1"})
	revoked, _ := issue(t, ca.Cert, ca.Key, certOpts{cn: "web-2"})
	rl.serials[revoked.SerialNumber.Text(16)] = true

	_, _, err = s.LoginWithCert(ctx, []*x509.Certificate{good}, "web")
	wantErr(t, err, nil)
	_, _, err = s.LoginWithCert(ctx, []*x509.Certificate{revoked}, "web")
	wantErr(t, err, ErrPermissionDenied)
	if !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("error %q does not say why", err)
	}

	// A certificate the role refuses anyway is not looked up.
	asked := rl.asked
	outsider, _ := issue(t, ca.Cert, ca.Key, certOpts{cn: "db-1"})
	_, _, err = s.LoginWithCert(ctx, []*x509.Certificate{outsider}, "web")
	wantErr(t, err, ErrPermissionDenied)
	if rl.asked != asked {
		t.Fatal("the checker was asked about a certificate the role refused")
	}

	// Fail closed: while the check fails nobody logs in, and the error is
	// not a permission problem of the client's.
	rl.err = errors.New("storage unavailable")
	tok, info, err := s.LoginWithCert(ctx, []*x509.Certificate{good}, "web")
	if err == nil || tok != "" || info != nil || errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("login while the check fails: token %v, err %v", tok != "", err)
	}
	if !errors.Is(err, rl.err) {
		t.Fatalf("error %v does not wrap the checker's", err)
	}
}

// RevokeCertTokens revokes the tokens one certificate logged in for, and
// their children, and no others; expired ones leave the index with Tidy.
func TestRevokeCertTokens(t *testing.T) {
	s, clock := newService(t)
	ctx := context.Background()
	ca := testCA(t, "workload CA")
	wantErr(t, s.WriteCertRole(ctx, CertRole{Name: "web", CACertificates: pemOf(ca.Cert), Policies: []string{"app"}, TTL: time.Hour}), nil)
	wantErr(t, s.WritePolicy(ctx, "app", []byte(`{"path": {"auth/token/create": {"capabilities": ["update"]}}}`)), nil)
	leaf, _ := issue(t, ca.Cert, ca.Key, certOpts{cn: "web-1"})
	other, _ := issue(t, ca.Cert, ca.Key, certOpts{cn: "web-2"})
	login := func(c *x509.Certificate) string {
		t.Helper()
		tok, _, err := s.LoginWithCert(ctx, []*x509.Certificate{c}, "web")
		wantErr(t, err, nil)
		return tok
	}
	a, b, keep := login(leaf), login(leaf), login(other)
	child, _, err := s.CreateToken(ctx, a, TokenRequest{Policies: []string{"app"}})
	wantErr(t, err, nil)

	n, err := s.RevokeCertTokens(ctx, leaf)
	wantErr(t, err, nil)
	if n != 3 {
		t.Fatalf("revoked %d tokens, want 3", n)
	}
	for _, tok := range []string{a, b, child} {
		_, err := s.Lookup(ctx, tok)
		wantErr(t, err, ErrPermissionDenied)
	}
	_, err = s.Lookup(ctx, keep)
	wantErr(t, err, nil)
	if n, err := s.RevokeCertTokens(ctx, leaf); err != nil || n != 0 {
		t.Fatalf("again: %d, %v", n, err)
	}

	// An expired login token leaves the index when Tidy removes it.
	clock.Add(2 * time.Hour)
	_, err = s.Tidy(ctx)
	wantErr(t, err, nil)
	if page, err := s.store.List(ctx, tableCertToks, raftstore.ListOptions{}); err != nil || len(page.Items) != 0 {
		t.Fatalf("index after Tidy: %d entries, %v", len(page.Items), err)
	}
}
