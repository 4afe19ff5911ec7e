package workload

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseSelector(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means an error
	}{
		{"unix:uid:1000", "unix:uid:1000"},
		{"unix:uid:01000", "unix:uid:1000"},
		{"unix:gid:0", "unix:gid:0"},
		{"unix:user:www-data", "unix:user:www-data"},
		{"unix:group:staff", "unix:group:staff"},
		{"unix:path:/usr/bin/envoy", "unix:path:/usr/bin/envoy"},
		{"unix:sha256:" + strings.Repeat("AB", 32), "unix:sha256:" + strings.Repeat("ab", 32)},
		{"unix:uid:-1", ""},
		{"unix:uid:4294967296", ""},
		{"unix:uid:", ""},
		{"unix:uid", ""},
		{"k8s:ns:default", ""},
		{"unix:pid:12", ""},
		{"unix:path:relative/bin", ""},
		{"unix:path:/usr/../bin/sh", ""},
		{"unix:user:a:b", ""},
		{"unix:user:a\nb", ""},
		{"unix:sha256:abcd", ""},
		{"unix:path:/" + strings.Repeat("a", 600), ""},
	} {
		got, err := ParseSelector(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseSelector(%q) = %v, want an error", tc.in, got)
		case tc.want == "" && !errors.Is(err, ErrInvalid):
			t.Errorf("ParseSelector(%q): %v, want ErrInvalid", tc.in, err)
		case tc.want != "" && (err != nil || got.String() != tc.want):
			t.Errorf("ParseSelector(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseSelector: a selector that parses is canonical after one round.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"unix:uid:1000", "unix:path:/bin/sh", "unix:sha256:" + strings.Repeat("0", 64), "unix:user:x", "unix::", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		again, err := ParseSelector(sel.String())
		if err != nil || again != sel {
			t.Fatalf("%q parsed to %v, which parses to %v, %v", s, sel, again, err)
		}
	})
}

func TestEntryNormalize(t *testing.T) {
	a := Entry{SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:uid:1000", "unix:gid:10", "unix:uid:01000"}, Role: "web"}
	b := Entry{SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:gid:10", "unix:uid:1000"}, Role: "other"}
	if err := a.normalize(); err != nil {
		t.Fatal(err)
	}
	if err := b.normalize(); err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID || len(a.Selectors) != 2 || a.Selectors[0] != "unix:gid:10" {
		t.Fatalf("the same registration got IDs %s and %s, selectors %v", a.ID, b.ID, a.Selectors)
	}
	for _, bad := range []Entry{
		{SPIFFEID: "spiffe://example.org", Selectors: []string{"unix:uid:1"}, Role: "r"},
		{SPIFFEID: "https://example.org/web", Selectors: []string{"unix:uid:1"}, Role: "r"},
		{SPIFFEID: "spiffe://example.org/web", Role: "r"},
		{SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:uid:1"}},
		{SPIFFEID: "spiffe://example.org/web", Selectors: make([]string, MaxSelectors+1), Role: "r"},
	} {
		if err := bad.normalize(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestRotateAtTwoThirdsOfTheLifeLeft(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	backdated := &x509.Certificate{NotBefore: issued.Add(-time.Minute), NotAfter: issued.Add(6 * time.Second)}
	if got := rotateAt(issued, backdated); !got.Equal(issued.Add(4 * time.Second)) {
		t.Fatalf("rotateAt = %v, want issuance + 4s", got)
	}
	future := &x509.Certificate{NotBefore: issued.Add(time.Hour), NotAfter: issued.Add(4 * time.Hour)}
	if got := rotateAt(issued, future); !got.Equal(issued.Add(3 * time.Hour)) {
		t.Fatalf("rotateAt = %v, want NotBefore + 2h", got)
	}
}

func TestBuildSecrets(t *testing.T) {
	root := &x509.Certificate{Raw: []byte("root")}
	leaf := &x509.Certificate{Raw: []byte("leaf")}
	u := &update{
		svids: []*svid{{entry: Entry{ID: "1", SPIFFEID: "spiffe://example.org/web"}, chain: []*x509.Certificate{leaf}, key: []byte("k"), serial: "01"}},
		roots: []*x509.Certificate{root},
		tds:   []spiffeid.TrustDomain{spiffeid.RequireTrustDomainFromString("example.org")},
	}
	names := func(resp *discoveryv3.DiscoveryResponse) (out []string) {
		for _, a := range resp.Resources {
			var s tlsv3.Secret
			if err := a.UnmarshalTo(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s.Name)
		}
		return out
	}
	all, fpAll, err := buildSecrets(&discoveryv3.DiscoveryRequest{}, u)
	if err != nil || strings.Join(names(all), ",") != "spiffe://example.org/web,spiffe://example.org" {
		t.Fatalf("no names: %v, %v", names(all), err)
	}
	some, fpSome, err := buildSecrets(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default", "ROOTCA", "example.org"}}, u)
	if err != nil || strings.Join(names(some), ",") != "ROOTCA,default,example.org" {
		t.Fatalf("named: %v, %v", names(some), err)
	}
	if fpAll == fpSome {
		t.Fatal("different secrets, same fingerprint")
	}
	u.svids[0].serial = "02"
	_, fpRotated, _ := buildSecrets(&discoveryv3.DiscoveryRequest{}, u)
	if fpRotated == fpAll {
		t.Fatal("a rotated certificate kept the fingerprint")
	}
	_, _, err = buildSecrets(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"spiffe://example.org/db", "ROOTCA"}}, u)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a name the caller has no secret for: %v, want InvalidArgument", err)
	}
}

func TestCheckSDSRequest(t *testing.T) {
	for _, req := range []*discoveryv3.DiscoveryRequest{
		{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"},
		{ResourceNames: make([]string, maxResourceNames+1)},
		{ResourceNames: []string{strings.Repeat("x", maxResourceName+1)}},
	} {
		if err := checkSDSRequest(req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: %v, want InvalidArgument", req, err)
		}
	}
	if err := checkSDSRequest(&discoveryv3.DiscoveryRequest{TypeUrl: SecretTypeURL, ResourceNames: []string{"default"}}); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err == nil || !strings.Contains(err.Error(), "SocketPath") {
		t.Fatalf("a config without a socket: %v", err)
	}
}
