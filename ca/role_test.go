package ca

import (
	"errors"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"
)

// role is a normalized role for the matching tests.
func role(t *testing.T, r Role) *Role {
	t.Helper()
	if r.Name == "" {
		r.Name = "t"
	}
	must(t, r.normalize(24*time.Hour, 90*24*time.Hour))
	return &r
}

func TestRoleDNSNames(t *testing.T) {
	exact := Role{AllowedDomains: []string{"api.example.com"}}
	sub := Role{AllowedDomains: []string{"example.com"}, AllowSubdomains: true}
	subBare := Role{AllowedDomains: []string{"example.com"}, AllowSubdomains: true, AllowBareDomains: true}
	glob := Role{AllowedDomains: []string{"*.example.com"}}
	globSub := Role{AllowedDomains: []string{"*.example.com"}, AllowSubdomains: true}
	partial := Role{AllowedDomains: []string{"web-*.example.com"}}
	wild := Role{AllowedDomains: []string{"*.example.com"}, AllowWildcardCertificates: true}
	wildSub := Role{AllowedDomains: []string{"example.com"}, AllowSubdomains: true, AllowWildcardCertificates: true}
	for _, tc := range []struct {
		name string
		role Role
		dns  string
		ok   bool
	}{
		{"exact", exact, "api.example.com", true},
		{"exact, upper case", exact, "API.Example.COM", true},
		{"exact, other name", exact, "www.example.com", false},
		{"exact, subdomain", exact, "a.api.example.com", false},
		{"exact, parent", exact, "example.com", false},
		{"subdomains, one level", sub, "a.example.com", true},
		{"subdomains, any depth", sub, "a.b.c.example.com", true},
		{"subdomains, bare not allowed", sub, "example.com", false},
		{"subdomains, suffix is not a subdomain", sub, "badexample.com", false},
		{"subdomains and bare", subBare, "example.com", true},
		{"subdomains and bare, other domain", subBare, "example.org", false},
		{"glob, one label", glob, "a.example.com", true},
		{"glob, two labels", glob, "a.b.example.com", false},
		{"glob, bare", glob, "example.com", false},
		{"glob with subdomains", globSub, "a.b.example.com", true},
		{"glob within a label", partial, "web-01.example.com", true},
		{"glob within a label, no match", partial, "db-01.example.com", false},
		{"wildcard certificate not allowed", glob, "*.example.com", false},
		{"wildcard certificate", wild, "*.example.com", true},
		{"wildcard certificate, deeper", wild, "*.a.example.com", false},
		{"wildcard certificate under subdomains", wildSub, "*.a.example.com", true},
		{"wildcard not leftmost", wildSub, "a.*.example.com", false},
		{"underscore", sub, "_srv.example.com", false},
		{"empty label", sub, "a..example.com", false},
		{"trailing dot", sub, "a.example.com.", false},
		{"leading hyphen", sub, "-a.example.com", false},
		{"space", sub, "a b.example.com", false},
		{"non-ASCII", sub, "bücher.example.com", false},
		{"punycode", sub, "xn--bcher-kva.example.com", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := role(t, tc.role).allowDNS(tc.dns)
			if (err == nil) != tc.ok {
				t.Fatalf("allowDNS(%q) = %v, want ok %t", tc.dns, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
		})
	}
}

func TestRoleIPs(t *testing.T) {
	r := role(t, Role{AllowedIPRanges: []string{"10.0.0.0/8", "192.168.1.7", "fd00::/8"}})
	if !slices.Equal(r.AllowedIPRanges, []string{"10.0.0.0/8", "192.168.1.7/32", "fd00::/8"}) {
		t.Fatalf("normalized ranges: %v", r.AllowedIPRanges)
	}
	for ip, ok := range map[string]bool{
		"10.1.2.3": true, "11.0.0.1": false, "192.168.1.7": true, "192.168.1.8": false,
		"fd00::1": true, "fe80::1": false, "::ffff:10.0.0.1": true, "127.0.0.1": false,
	} {
		if err := r.allowIP(net.ParseIP(ip)); (err == nil) != ok {
			t.Errorf("allowIP(%s) = %v, want ok %t", ip, err, ok)
		}
	}
}

func TestRoleURIs(t *testing.T) {
	r := role(t, Role{AllowedURISANs: []string{"spiffe://example.org/ns/*/sa/*", "spiffe://example.org/db", "https://id.example.com/svc-*"}})
	for _, tc := range []struct {
		uri string
		ok  bool
	}{
		{"spiffe://example.org/ns/prod/sa/web", true},
		{"spiffe://example.org/ns/prod/sa/web/extra", false},
		{"spiffe://example.org/ns/prod/sa", false},
		{"spiffe://example.org/ns//sa/web", false},
		{"spiffe://example.org/ns/../sa/web", false},
		{"spiffe://other.org/ns/prod/sa/web", false},
		{"spiffe://example.org:443/db", false},
		{"spiffe://example.org/db", true},
		{"spiffe://example.org/db?x=1", false},
		{"spiffe://example.org/db#frag", false},
		{"spiffe://user@example.org/db", false},
		{"spiffe://EXAMPLE.org/db", false},
		{"https://id.example.com/svc-a", true},
		{"https://id.example.com/svc-a/b", false},
		{"urn:example:db", false},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			u, err := url.Parse(tc.uri)
			must(t, err)
			if err := r.allowURI(u); (err == nil) != tc.ok {
				t.Fatalf("allowURI(%s) = %v, want ok %t", tc.uri, err, tc.ok)
			}
		})
	}
}

func TestRoleNormalize(t *testing.T) {
	for _, tc := range []struct {
		name string
		role Role
	}{
		{"bad name", Role{Name: "Web/1"}},
		{"RSA under 2048", Role{Name: "r", MinRSABits: 1024}},
		{"unknown key type", Role{Name: "r", AllowedKeyTypes: []string{"dsa"}}},
		{"ttl over max_ttl", Role{Name: "r", TTL: 48 * time.Hour, MaxTTL: 24 * time.Hour}},
		{"max_ttl over the CA's", Role{Name: "r", MaxTTL: 1000 * 24 * time.Hour}},
		{"bad domain", Role{Name: "r", AllowedDomains: []string{"a..b"}}},
		{"bad CIDR", Role{Name: "r", AllowedIPRanges: []string{"10.0.0.0/33"}}},
		{"URI pattern with a query", Role{Name: "r", AllowedURISANs: []string{"spiffe://a/b?c"}}},
		{"URI pattern glob in host", Role{Name: "r", AllowedURISANs: []string{"spiffe://*.org/b"}}},
		{"unknown key usage", Role{Name: "r", KeyUsage: []string{"cert_sign"}}},
		{"unknown extended key usage", Role{Name: "r", ExtKeyUsage: []string{"any"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.role.normalize(24*time.Hour, 90*24*time.Hour); !errors.Is(err, ErrInvalid) {
				t.Fatalf("normalize = %v, want ErrInvalid", err)
			}
		})
	}
	r := role(t, Role{Name: "d"})
	if r.TTL != 24*time.Hour || r.MaxTTL != 90*24*time.Hour || r.MinRSABits != 2048 || len(r.AllowedKeyTypes) != 4 || len(r.KeyUsage) != 2 {
		t.Fatalf("defaults: %+v", r)
	}
}

func TestRoleStorage(t *testing.T) {
	c, _ := newTestCA(t)
	got, err := c.ReadRole(bg, "web")
	must(t, err)
	if got.MaxTTL != 72*time.Hour || got.TTL != 24*time.Hour || !got.AllowSubdomains {
		t.Fatalf("read back: %+v", got)
	}
	_, err = c.WriteRole(bg, Role{Name: "api", AllowedDomains: []string{"API.example.com"}})
	must(t, err)
	if r, _ := c.ReadRole(bg, "api"); r.AllowedDomains[0] != "api.example.com" {
		t.Fatalf("domain not lower-cased: %v", r.AllowedDomains)
	}
	names, err := c.ListRoles(bg)
	must(t, err)
	if !slices.Equal(names, []string{"api", "web"}) {
		t.Fatalf("ListRoles = %v", names)
	}
	must(t, c.DeleteRole(bg, "api"))
	if err := c.DeleteRole(bg, "api"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v, want ErrNotFound", err)
	}
	if _, err := c.ReadRole(bg, "api"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read deleted role = %v", err)
	}
	if _, err := c.WriteRole(bg, Role{Name: "weak", MinRSABits: 1024}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("weak role written: %v", err)
	}
}
