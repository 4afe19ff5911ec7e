package stepca

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"testing"
	"time"

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
func TestIssuanceRefused(t *testing.T) {
	var e *env
	linted := make(chan error, 16)
	e = newEnv(t, func(c *Config) {
		c.Linter = func(_ context.Context, tpl *x509.Certificate) error {
			switch {
			case tpl.SerialNumber == nil || tpl.SubjectKeyId == nil || tpl.NotAfter.IsZero():
				linted <- fmt.Errorf("incomplete template: %+v", tpl)
			case !bytes.Equal(tpl.AuthorityKeyId, e.ca.inter.SubjectKeyId) || tpl.Issuer.CommonName != e.ca.inter.Subject.CommonName:
				linted <- fmt.Errorf("template issuer %v", tpl.Issuer)
			}
			if len(tpl.DNSNames) > 0 && tpl.DNSNames[0] == "lint-fails.test" {
				return fmt.Errorf("e_test_refusal")
			}
			return nil
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
}
