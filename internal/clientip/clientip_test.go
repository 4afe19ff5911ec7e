package clientip

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestOfIgnoresTheHeader(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.7:4711"
	r.Header.Set(Header, "10.1.2.3")
	if got := Of(r); got != netip.MustParseAddr("192.0.2.7") {
		t.Fatalf("Of = %v, want the TCP peer", got)
	}
	r = r.WithContext(NewContext(r.Context(), netip.MustParseAddr("::ffff:198.51.100.1")))
	if got := Of(r); got != netip.MustParseAddr("198.51.100.1") {
		t.Fatalf("Of = %v, want the context's address, unmapped", got)
	}
}

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":               "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":    "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":    "2001:db8:1:2::/64",
		"::ffff:192.0.2.7":        "192.0.2.7",
		"2001:db8:1:3:3:4:5:6":    "2001:db8:1:3::/64",
		"fe80::1":                 "fe80::/64",
		"2001:db8:aaaa:bbbb::cc1": "2001:db8:aaaa:bbbb::/64",
	} {
		if got := Key(netip.MustParseAddr(in).Unmap()); got != want {
			t.Errorf("Key(%s) = %s, want %s", in, got, want)
		}
	}
	if Key(netip.Addr{}) != "unknown" {
		t.Error("the zero address has a key other than unknown")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "::1", "fe80::1%eth0", " 1.2.3.4 ", "1.2.3.4, 5.6.7.8", "", "::ffff:1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ip, ok := Parse(s)
		if !ok {
			return
		}
		if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
			t.Fatalf("Parse(%q) = %v", s, ip)
		}
		if again, ok := Parse(ip.String()); !ok || again != ip {
			t.Fatalf("Parse(%q) = %v does not read back", s, ip)
		}
	})
}
