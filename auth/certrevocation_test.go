package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/custos-pki/custos/internal/testutil"
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
