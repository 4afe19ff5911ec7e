package ca

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestList(t *testing.T) {
	c, s := newTestCA(t)
	_, err := c.WriteRole(bg, Role{Name: "db", AllowedDomains: []string{"db.internal"}, AllowSubdomains: true, MaxTTL: 30 * 24 * time.Hour})
	must(t, err)
	sign := func(role, name string, ttl time.Duration, ips ...net.IP) string {
		got, err := c.Issue(bg, role, IssueRequest{CommonName: name, IPs: ips, TTL: ttl})
		must(t, err)
		return got.Serial
	}
	web1 := sign("web", "www.example.com", time.Hour)
	web2 := sign("web", "api.example.com", 48*time.Hour, net.ParseIP("10.9.9.9"))
	db1 := sign("db", "pg.db.internal", 10*24*time.Hour)
	db2 := sign("db", "redis.db.internal", 20*24*time.Hour)
	_, err = c.Revoke(bg, db2, 5)
	must(t, err)

	serials := func(f Filter) []string {
		t.Helper()
		page, err := c.List(bg, f)
		must(t, err)
		var out []string
		for _, ct := range page.Certs {
			out = append(out, ct.Serial)
		}
		slices.Sort(out)
		return out
	}
	sorted := func(s ...string) []string { slices.Sort(s); return s }
	for _, tc := range []struct {
		name string
		f    Filter
		want []string
	}{
		{"all", Filter{}, sorted(web1, web2, db1, db2)},
		{"by serial", Filter{Serial: web2}, sorted(web2)},
		{"unknown serial", Filter{Serial: "abcdef"}, nil},
		{"by role", Filter{Role: "db"}, sorted(db1, db2)},
		{"SAN substring", Filter{SAN: "EXAMPLE"}, sorted(web1, web2)},
		{"SAN glob", Filter{SAN: "*.db.internal"}, sorted(db1, db2)},
		{"SAN glob, one name", Filter{SAN: "pg.*"}, sorted(db1)},
		{"SAN IP", Filter{SAN: "10.9.9.9"}, sorted(web2)},
		{"revoked", Filter{Status: StatusRevoked}, sorted(db2)},
		{"valid", Filter{Status: StatusValid}, sorted(web1, web2, db1)},
		{"expiring within 72h", Filter{ExpiringWithin: 72 * time.Hour}, sorted(web1, web2)},
		{"expiring within 72h, role db", Filter{ExpiringWithin: 72 * time.Hour, Role: "db"}, nil},
		{"expiring within 15 days, valid", Filter{ExpiringWithin: 15 * 24 * time.Hour, Status: StatusValid}, sorted(web1, web2, db1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := serials(tc.f); !slices.Equal(got, tc.want) {
				t.Fatalf("List(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
	s.clock.Add(2 * time.Hour)
	if got := serials(Filter{Status: StatusExpired}); !slices.Equal(got, []string{web1}) {
		t.Fatalf("expired = %v", got)
	}
	if got := serials(Filter{ExpiringWithin: 72 * time.Hour}); !slices.Equal(got, []string{web2}) {
		t.Fatalf("expiring after an expiry = %v", got)
	}
	// Pages of one, in every plan.
	for _, f := range []Filter{{}, {Role: "db"}, {ExpiringWithin: 100 * 24 * time.Hour}, {Status: StatusRevoked}} {
		f.Limit = 1
		var all []string
		for range 10 {
			page, err := c.List(bg, f)
			must(t, err)
			for _, ct := range page.Certs {
				all = append(all, ct.Serial)
			}
			if page.Next == "" {
				break
			}
			f.After = page.Next
		}
		f.After, f.Limit = "", 0
		if slices.Sort(all); !slices.Equal(all, serials(f)) {
			t.Fatalf("paged %+v: %v, want %v", f, all, serials(f))
		}
	}
	for _, f := range []Filter{{Status: "bogus"}, {Role: "Bad/Role"}, {ExpiringWithin: -1}, {Limit: -1}, {Role: "db", After: "exp/0"}} {
		if _, err := c.List(bg, f); !errors.Is(err, ErrInvalid) {
			t.Fatalf("List(%+v) = %v", f, err)
		}
	}
	if _, err := c.Get(bg, "xyz"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Get(xyz) = %v", err)
	}
	if ct, err := c.Get(bg, colons(web1)); err != nil || ct.Serial != web1 {
		t.Fatalf("Get with colons = %v, %v", ct.Serial, err)
	}
}

func colons(hex string) string {
	var out []byte
	for i := 0; i < len(hex); i += 2 {
		if i > 0 {
			out = append(out, ':')
		}
		out = append(out, hex[i:i+2]...)
	}
	return string(out)
}

// The ACME and step paths sign with Issuer's signer and Record what they
// issued.
func TestRecord(t *testing.T) {
	c, signer, chain, key, tmpl := stepLeaf(t, "acme-serial-0001", "acme.example.com")
	cert, err := c.SignTemplate(bg, tmpl, chain[0], signer)
	must(t, err)
	must(t, cert.CheckSignatureFrom(chain[0]))
	if !slices.Equal(cert.DNSNames, tmpl.DNSNames) || cert.SerialNumber.Cmp(tmpl.SerialNumber) != 0 || !key.PublicKey.Equal(cert.PublicKey) {
		t.Fatalf("SignTemplate signed %v %v", cert.DNSNames, cert.SerialNumber)
	}
	must(t, c.Lint(cert))
	// Only the issuing certificate's key signs.
	if _, err := c.SignTemplate(bg, tmpl, chain[0], key); err == nil {
		t.Fatal("SignTemplate signed with a key that is not the issuer's")
	}
	must(t, c.Record(bg, cert, "acme", "acme"))
	must(t, c.Record(bg, cert, "acme", "acme")) // again: a no-op
	got, err := c.Get(bg, serialString(cert.SerialNumber))
	must(t, err)
	if got.Source != "acme" || got.Role != "acme" || got.Issuer != "int-1" {
		t.Fatalf("recorded: %+v", got)
	}
	// Another certificate with the same serial is a conflict.
	tmpl.DNSNames = []string{"other.example.com"}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, chain[0], key.Public(), signer)
	must(t, err)
	dup, _ := x509.ParseCertificate(der)
	if err := c.Record(bg, dup, "acme", ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("same serial, other certificate = %v", err)
	}
	// A certificate this CA did not issue is refused.
	tmpl.SerialNumber = big.NewInt(99)
	tmpl.Issuer = pkix.Name{CommonName: "x"}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	must(t, err)
	foreign, _ := x509.ParseCertificate(der)
	if err := c.Record(bg, foreign, "step", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("foreign certificate = %v", err)
	}
	if err := c.Record(bg, cert, "", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no source = %v", err)
	}
	bad := *tmpl
	bad.DNSNames = []string{"a.*.example.com"}
	if got, err := c.SignTemplate(bg, &bad, chain[0], signer); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "e_san_wildcard_not_first") || got != nil {
		t.Fatalf("SignTemplate(bad) = %v, %v", got, err)
	}
	// A step provisioner's name is a role too.
	tmpl.SerialNumber, tmpl.Issuer = big.NewInt(100), pkix.Name{}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, chain[0], key.Public(), signer)
	must(t, err)
	step, _ := x509.ParseCertificate(der)
	must(t, c.Record(bg, step, "step", "admin@example.com"))
	if page, err := c.List(bg, Filter{Role: "admin@example.com"}); err != nil || len(page.Certs) != 1 || page.Certs[0].Source != "step" {
		t.Fatalf("List by provisioner: %v %v", page, err)
	}
	// Revocation and the CRL cover every path.
	_, err = c.Revoke(bg, serialString(cert.SerialNumber), 0)
	must(t, err)
	if _, ok := crlHas(parseCRL(t, mustCRL(t, c), chain[0]), cert.SerialNumber); !ok {
		t.Fatal("an ACME certificate's revocation is not in the CRL")
	}
}
