package ca

import (
	"errors"
	"net"
	"testing"
)

func TestNamePolicy(t *testing.T) {
	p, err := NamePolicy{
		Allowed: []string{"API.example.com", "*.web.example.com", ".svc.example.com", "10.0.0.0/8", "2001:db8::1"},
		Denied:  []string{"admin.svc.example.com", "x.web.example.com", "10.9.0.0/16"},
	}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	wild := p
	wild.AllowWildcards = true
	for _, tc := range []struct {
		p    NamePolicy
		name string
		ok   bool
	}{
		{p, "api.example.com", true},
		{p, "API.EXAMPLE.COM", true},
		{p, "www.example.com", false},
		{p, "a.api.example.com", false},
		{p, "a.web.example.com", true},
		{p, "a.b.web.example.com", false},
		{p, "web.example.com", false},
		{p, "x.web.example.com", false}, // denied
		{p, "a.svc.example.com", true},
		{p, "a.b.svc.example.com", true},
		{p, "svc.example.com", false},
		{p, "admin.svc.example.com", false}, // denied
		{p, "a.admin.svc.example.com", true},
		{p, "evilsvc.example.com", false},
		{p, "a.svc.example.com.evil.test", false},
		{p, "*.svc.example.com", false},     // wildcards off
		{wild, "*.b.svc.example.com", true}, // below the suffix
		{wild, "*.svc.example.com", false},  // covers the denied admin.svc.example.com
		{wild, "*.web.example.com", false},  // covers the denied x.web.example.com
		{wild, "*.a.web.example.com", false},
		{wild, "*.example.com", false},
		{p, "a..example.com", false},
	} {
		if err := tc.p.CheckDNSName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckDNSName(%q) (wildcards %t) = %v, want ok %t", tc.name, tc.p.AllowWildcards, err, tc.ok)
		} else if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckDNSName(%q): %v does not match ErrInvalid", tc.name, err)
		}
	}
	for ip, ok := range map[string]bool{"10.1.2.3": true, "10.9.1.1": false, "11.0.0.1": false, "2001:db8::1": true, "2001:db8::2": false, "::ffff:10.1.2.3": true} {
		if err := p.CheckIP(net.ParseIP(ip)); (err == nil) != ok {
			t.Errorf("CheckIP(%s) = %v, want ok %t", ip, err, ok)
		}
	}
	if err := (NamePolicy{}).CheckDNSName("any.example.org"); err != nil {
		t.Errorf("empty policy: %v", err)
	}
	if err := (NamePolicy{Denied: []string{"10.0.0.0/8"}}).CheckIP(net.ParseIP("10.0.0.1")); err == nil {
		t.Error("deny list without allow list allowed a denied address")
	}
	for _, bad := range []string{"", "a..b", "a.*.b", "**.a", "*a.b", "-a.b", "10.0.0.0/33", "a/b", "x_y.example.com"} {
		if _, err := (NamePolicy{Allowed: []string{bad}}).Normalize(); !errors.Is(err, ErrInvalid) {
			t.Errorf("entry %q: %v, want invalid", bad, err)
		}
	}
}

// FuzzNamePolicy: whatever the entries and the name, checking does not
// panic, and a name a deny entry matches is never allowed.
func FuzzNamePolicy(f *testing.F) {
	f.Add(".example.com", "*.a.example.com", "a.b.example.com")
	f.Add("*.example.com", "x.example.com", "*.example.com")
	f.Add("10.0.0.0/8", "10.0.0.1", "10.1.1.1")
	f.Fuzz(func(t *testing.T, allow, deny, name string) {
		p, err := NamePolicy{Allowed: []string{allow}, Denied: []string{deny}, AllowWildcards: true}.Normalize()
		if err != nil {
			return
		}
		if ip := net.ParseIP(name); ip != nil {
			_ = p.CheckIP(ip)
			return
		}
		if p.CheckDNSName(name) == nil && (NamePolicy{Allowed: []string{deny}}).CheckDNSName(name) == nil {
			t.Fatalf("%q allowed though %q denies it", name, deny)
		}
	})
}
