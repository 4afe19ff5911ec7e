package stepca

import (
	"context"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
)

// TestCollectCertificates deletes step's records of ACME certificates that
// expired more than the retention ago, and keeps the others.
func TestCollectCertificates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.newACMEClient(t)
	chain, err := e.issue(ctx, c, "http-01", acme.DomainIDs("gc.test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.issue(ctx, c, "http-01", acme.DomainIDs("gc2.test")); err != nil {
		t.Fatal(err)
	}
	// A record step wrote (with its serial entry and the authority's
	// copies) is collected too.
	leaf, err := e.srv.acmeDB.GetCertificate(ctx, certID(chain[0].SerialNumber))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.writeLegacy(ctx, leaf); err != nil {
		t.Fatal(err)
	}
	if e.rows(t, bucketCerts) != 2 || e.rows(t, bucketCertBySerial) != 1 {
		t.Fatalf("%d certificates, %d serial entries before, want 2 and 1", e.rows(t, bucketCerts), e.rows(t, bucketCertBySerial))
	}
	if e.rows(t, bucketX509) != 1 || e.rows(t, bucketX509Data) != 1 {
		t.Fatalf("%d authority records, %d data records before, want 1 each", e.rows(t, bucketX509), e.rows(t, bucketX509Data))
	}
	live := func(retention time.Duration) int {
		t.Helper()
		n, m, err := e.srv.CollectCertificates(ctx, retention)
		if err != nil || m > n || (n > 0 && m != 1) {
			t.Fatalf("collect: %d ACME and %d authority records, %v", n, m, err)
		}
		return n
	}
	if n := live(0); n != 0 || e.rows(t, bucketCerts) != 2 {
		t.Fatalf("unexpired certificates: %d removed", n)
	}
	// Expired an hour ago: kept with two hours of retention, removed with
	// half an hour.
	e.clock.Advance(time.Until(chain[0].NotAfter) + time.Hour)
	if n := live(2 * time.Hour); n != 0 || e.rows(t, bucketCerts) != 2 {
		t.Fatalf("certificates within the retention: %d removed", n)
	}
	if n := live(30 * time.Minute); n != 2 || e.rows(t, bucketCerts) != 0 || e.rows(t, bucketCertBySerial) != 0 || e.rows(t, bucketX509) != 0 || e.rows(t, bucketX509Data) != 0 {
		t.Fatalf("expired certificates: %d removed, %d records and %d serial entries left", n, e.rows(t, bucketCerts), e.rows(t, bucketCertBySerial))
	}
	if _, _, err := e.srv.CollectCertificates(ctx, -time.Second); err == nil {
		t.Fatal("negative retention accepted")
	}
}
