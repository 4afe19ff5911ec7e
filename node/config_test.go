package node

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestACMEValidatorDenyConfig: ranges and single addresses parse; anything
// else fails Validate naming the setting.
func TestACMEValidatorDenyConfig(t *testing.T) {
	c := DefaultConfig()
	c.NodeID, c.DataDir = "n1", t.TempDir()
	c.ACMEValidatorDeny = []string{"10.0.0.0/8", "127.0.0.1", "fd00::/8"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	got, _ := c.validatorDeny()
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("fd00::/8")}
	if !slices.Equal(got, want) {
		t.Errorf("deny %v, want %v", got, want)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "fe80::1%eth0", ""} {
		c.ACMEValidatorDeny = []string{bad}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "acme_validator_deny") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestOwnAddrs: every listen and advertised address, an empty host as the
// unspecified address, and names resolved.
func TestOwnAddrs(t *testing.T) {
	c := Config{APIAddr: ":8443", ClusterAddr: "10.0.0.5:8444", APIAdvertise: "localhost:443", ClusterAdvertise: "[2001:db8::5]:8444", PKIHTTPAddr: "0.0.0.0:80"}
	got := c.ownAddrs(context.Background(), "127.0.0.1:39999", "")
	for _, want := range []string{"[::]:8443", "10.0.0.5:8444", "127.0.0.1:443", "[2001:db8::5]:8444", "0.0.0.0:80", "127.0.0.1:39999"} {
		if !slices.Contains(got, netip.MustParseAddrPort(want)) {
			t.Errorf("%s missing from %v", want, got)
		}
	}
}
