package stepca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/raftstore"
	"golang.org/x/crypto/acme"
)

func (e *env) rows(t *testing.T, bucket string) int {
	t.Helper()
	n := 0
	if err := listAll(context.Background(), e.b, TablePrefix+bucket, func(raftstore.KV) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCollect deletes expired orders, authorizations and challenges, and
// leaves the account and its certificates working (#159, #473).
func TestCollect(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)
	chain, err := e.issue(ctx, c, "http-01", acme.DomainIDs("done.test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AuthorizeOrder(ctx, acme.DomainIDs("pending.test")); err != nil {
		t.Fatal(err)
	}
	if st, err := e.srv.Collect(ctx, 0); err != nil || st != (CollectStats{}) {
		t.Fatalf("Collect of nothing old: %+v, %v", st, err)
	}
	if n := e.tableRows(t, OrderIndexTable); n != 1 {
		t.Errorf("%d order index entries, want the pending order's", n)
	}

	e.clock.Advance(25 * time.Hour) // orders expire after 24h
	st, err := e.srv.Collect(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The valid authorization kept its validated challenge only; the
	// pending one has three.
	if want := (CollectStats{Orders: 2, Authorizations: 2, Challenges: 4}); st != want {
		t.Errorf("Collect: %+v, want %+v", st, want)
	}
	for _, b := range []string{bucketOrders, bucketAuthzs, bucketChallenges, bucketOrderIndex} {
		if n := e.rows(t, b); n != 0 {
			t.Errorf("%s has %d rows left", b, n)
		}
	}
	if n := e.tableRows(t, OrderIndexTable); n != 0 {
		t.Errorf("%s has %d rows left", OrderIndexTable, n)
	}

	// The account lists its orders, orders anew, and revokes what it holds.
	raw := e.rawClient(t, c)
	if resp, body := raw.post(t, raw.kid+"/orders", raw.sign(t, raw.kid+"/orders", nil)); resp.StatusCode != http.StatusOK {
		t.Fatalf("orders list after Collect: %d %s", resp.StatusCode, body)
	}
	if _, err := e.issue(ctx, c, "http-01", acme.DomainIDs("after.test")); err != nil {
		t.Fatalf("issuance after Collect: %v", err)
	}
	if err := c.RevokeCert(ctx, nil, chain[0].Raw, acme.CRLReasonCessationOfOperation); err != nil {
		t.Fatalf("revocation after Collect: %v", err)
	}
}

// TestIssuanceRefused: the linter sees the complete certificate before it
// is signed and can refuse it; a recorder that fails stops delivery. Either
// way nothing is issued, and the order can be finalized again.
//
// With Config.SignTemplate, which lints and signs in one step (custos's
// CA), the same holds, and what it signs is what the client gets.
func TestIssuanceRefused(t *testing.T) {
	t.Run("linter", func(t *testing.T) { testIssuanceRefused(t, false) })
	t.Run("sign-template", func(t *testing.T) { testIssuanceRefused(t, true) })
}

func testIssuanceRefused(t *testing.T, signTemplate bool) {
	var e *env
	linted := make(chan error, 16)
	var signed sync.Map // serial -> DER signed by SignTemplate
	e = newEnv(t, func(c *Config) {
		lint := func(tpl *x509.Certificate) error {
			switch {
			case tpl.SerialNumber == nil || tpl.SubjectKeyId == nil || tpl.NotAfter.IsZero():
				linted <- fmt.Errorf("incomplete template: %+v", tpl)
			case !bytes.Equal(tpl.AuthorityKeyId, e.ca.inter.SubjectKeyId) || tpl.Issuer.CommonName != e.ca.inter.Subject.CommonName:
				linted <- fmt.Errorf("template issuer %v", tpl.Issuer)
			}
			if len(tpl.DNSNames) > 0 && tpl.DNSNames[0] == "lint-fails.test" {
				return fmt.Errorf("%w: e_test_refusal", ca.ErrInvalid)
			}
			return nil
		}
		if !signTemplate {
			c.Linter = func(_ context.Context, tpl *x509.Certificate) error { return lint(tpl) }
			return
		}
		c.SignTemplate = func(_ context.Context, tpl, parent *x509.Certificate, signer crypto.Signer) (*x509.Certificate, error) {
			if !parent.Equal(e.ca.inter) {
				linted <- fmt.Errorf("SignTemplate got parent %v", parent.Subject)
			}
			if err := lint(tpl); err != nil {
				return nil, err
			}
			der, err := x509.CreateCertificate(rand.Reader, tpl, parent, tpl.PublicKey, signer)
			if err != nil {
				return nil, err
			}
			signed.Store(tpl.SerialNumber.String(), der)
			return x509.ParseCertificate(der)
		}
	})
	ctx := context.Background()
	c := e.newACMEClient(t)
	raw := e.rawClient(t, c)
	finalize := func(t *testing.T, name string) (*http.Response, []byte) {
		t.Helper()
		o, err := c.AuthorizeOrder(ctx, acme.DomainIDs(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.solve(ctx, c, o, "http-01"); err != nil {
			t.Fatal(err)
		}
		csr := map[string]string{"csr": b64url(newCSR(nil, acme.DomainIDs(name)))}
		resp, body := raw.post(t, o.FinalizeURL, raw.sign(t, o.FinalizeURL, csr))
		if resp.StatusCode < 400 {
			return resp, body
		}
		// The order is still ready: finalize it again with the fault gone.
		e.rec.fail.Store(false)
		if name != "lint-fails.test" {
			if resp2, body2 := raw.post(t, o.FinalizeURL, raw.sign(t, o.FinalizeURL, csr)); resp2.StatusCode != http.StatusOK {
				t.Errorf("second finalize: %d %s", resp2.StatusCode, body2)
			}
		}
		return resp, body
	}

	resp, body := finalize(t, "lint-fails.test")
	problem(t, resp, body, http.StatusBadRequest, "badCSR")
	if !bytes.Contains(body, []byte("e_test_refusal")) {
		t.Errorf("problem does not name the lint: %s", body)
	}
	if e.rec.count() != 0 {
		t.Error("a certificate refused by the linter was recorded")
	}

	e.rec.fail.Store(true)
	resp, body = finalize(t, "unrecorded.test")
	problem(t, resp, body, http.StatusInternalServerError, "serverInternal")
	if n := e.rec.count(); n != 1 {
		t.Errorf("%d certificates recorded, want the second finalize's only", n)
	}
	close(linted)
	for err := range linted {
		t.Error(err)
	}
	if !signTemplate {
		return
	}
	// Each certificate delivered is the one SignTemplate signed.
	e.rec.mu.Lock()
	recs := maps.Clone(e.rec.certs)
	e.rec.mu.Unlock()
	n := 0
	for _, r := range recs {
		cert := r.cert
		if der, ok := signed.Load(cert.SerialNumber.String()); !ok || !bytes.Equal(der.([]byte), cert.Raw) {
			t.Errorf("recorded certificate %v is not what SignTemplate signed", cert.SerialNumber)
		}
		n++
	}
	if n == 0 {
		t.Error("nothing was recorded")
	}
}
