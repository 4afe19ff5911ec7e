package ca

import (
	"errors"
	"testing"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

func issueTTL(t testing.TB, c *CA, name string, ttl time.Duration) *Issued {
	t.Helper()
	got, err := c.Issue(bg, "web", IssueRequest{CommonName: name, TTL: ttl})
	must(t, err)
	return got
}

// indexKeys lists the keys of the inventory's index under prefix.
func indexKeys(t testing.TB, s *stack, prefix string) []string {
	t.Helper()
	page, err := s.barrier.List(bg, tableIndex, raftstore.ListOptions{Prefix: []byte(prefix), KeysOnly: true, Limit: 1000})
	must(t, err)
	var out []string
	for _, kv := range page.Items {
		out = append(out, string(kv.Key))
	}
	return out
}

func TestTidyRemovesExpiredCertificatesAfterRetention(t *testing.T) {
	c, s := newTestCA(t)
	short := issueTTL(t, c, "short.example.com", time.Hour)
	shortRev := issueTTL(t, c, "short-revoked.example.com", time.Hour)
	long := issueTTL(t, c, "long.example.com", 48*time.Hour)
	longRev := issueTTL(t, c, "long-revoked.example.com", 48*time.Hour)
	for _, x := range []*Issued{shortRev, longRev} {
		_, err := c.Revoke(bg, x.Serial, 1)
		must(t, err)
	}
	inter := short.Chain[0]
	crl0 := parseCRL(t, mustCRL(t, c), inter)
	for _, x := range []*Issued{shortRev, longRev} {
		if _, ok := crlHas(crl0, x.Certificate.SerialNumber); !ok {
			t.Fatalf("revoked %s not in the CRL", x.Serial)
		}
	}
	present := func(x *Issued) bool {
		_, err := c.Get(bg, x.Serial)
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	// Nothing is past its retention yet.
	st, err := c.Tidy(bg, time.Hour)
	must(t, err)
	if st.Removed != 0 || countCerts(t, c) != 4 {
		t.Fatalf("tidy before anything expired: %+v, %d certificates", st, countCerts(t, c))
	}

	// The short ones expired more than the retention ago. The revoked one
	// is still listed by the current CRL, made before it expired: it stays.
	s.clock.Add(2*time.Hour + time.Minute)
	st, err = c.Tidy(bg, time.Hour)
	must(t, err)
	if st.Removed != 1 || st.Kept != 1 || present(short) || !present(shortRev) || !present(long) || !present(longRev) {
		t.Fatalf("first tidy: %+v; present: short %v, short revoked %v, long %v, long revoked %v",
			st, present(short), present(shortRev), present(long), present(longRev))
	}

	// A CRL made after it expired no longer lists it: then it goes, its
	// revocation and role entries with it. The revoked unexpired one stays
	// in the CRL.
	s.clock.Add(13 * time.Hour)
	must(t, c.Maintain(bg))
	st, err = c.Tidy(bg, time.Hour)
	must(t, err)
	if st.Removed != 1 || st.Kept != 0 || present(shortRev) || !present(long) || !present(longRev) {
		t.Fatalf("second tidy: %+v", st)
	}
	crl1 := parseCRL(t, mustCRL(t, c), inter)
	if _, ok := crlHas(crl1, longRev.Certificate.SerialNumber); !ok || len(crl1.RevokedCertificateEntries) != 1 {
		t.Fatalf("CRL after tidy has %d entries, want the revoked unexpired certificate only", len(crl1.RevokedCertificateEntries))
	}
	if rev := indexKeys(t, s, "rev/"); len(rev) != 1 {
		t.Fatalf("revocation entries after tidy: %q", rev)
	}
	if n := len(indexKeys(t, s, "role/web/")) + len(indexKeys(t, s, "exp/")); n != 4 {
		t.Fatalf("%d role and expiry entries after tidy, want 2 each", n)
	}

	// Off the leader, nothing is removed.
	s.clock.Add(72 * time.Hour)
	s.leader.Store(false)
	st, err = c.Tidy(bg, time.Hour)
	must(t, err)
	if st.Removed != 0 || !present(long) {
		t.Fatalf("tidy off the leader: %+v", st)
	}
	s.leader.Store(true)
	must(t, c.Maintain(bg))
	st, err = c.Tidy(bg, time.Hour)
	must(t, err)
	if st.Removed != 2 || countCerts(t, c) != 0 || len(indexKeys(t, s, "")) != 0 {
		t.Fatalf("last tidy: %+v, %d certificates, index %q", st, countCerts(t, c), indexKeys(t, s, ""))
	}
	if _, err := c.Tidy(bg, -time.Second); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative retention: %v", err)
	}
}

func TestParseExpKey(t *testing.T) {
	at := time.Unix(1_800_000_000, 0).UTC()
	got, serial, ok := parseExpKey(expKey(at, "0abc"))
	if !ok || !got.Equal(at) || serial != "0abc" {
		t.Fatalf("parseExpKey: %v %q %v", got, serial, ok)
	}
	for _, k := range []string{"exp/", "exp/zz/ab", "exp/000000006b49d200ab", "exp/000000006b49d200/", "exp/000000006b49d200/xyz", "rev/000000006b49d200/ab"} {
		if _, _, ok := parseExpKey([]byte(k)); ok {
			t.Errorf("parseExpKey(%q) accepted", k)
		}
	}
}
