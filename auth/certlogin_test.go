package auth

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, value string
		sep            rune
		want           bool
	}{
		{"spiffe://example.org/ns/*/sa/*", "spiffe://example.org/ns/prod/sa/web", '/', true},
		{"spiffe://example.org/ns/*/sa/*", "spiffe://example.org/ns/prod/sa/web.v2", '/', true},
		{"spiffe://example.org/ns/*/sa/*", "spiffe://example.org/ns/a/b/sa/web", '/', false},
		{"spiffe://example.org/ns/*/sa/*", "spiffe://example.org/ns/prod/sa/web/x", '/', false},
		{"spiffe://example.org/ns/*/sa/*", "spiffe://example.org/ns//sa/web", '/', false},
		{"spiffe://example.org/ns/*/sa/*", "spiffe://evil.org/ns/prod/sa/web", '/', false},
		{"*.svc.example.com", "api.svc.example.com", '.', true},
		{"*.svc.example.com", "a.b.svc.example.com", '.', false},
		{"*.svc.example.com", ".svc.example.com", '.', false},
		{"api-*.example.com", "api-1.example.com", '.', true},
		{"*", "anything at all/even.this", 0, true},
		{"*", "", 0, false},
		{"exact", "exact", 0, true},
		{"exact", "exactly", 0, false},
		{"a*b*c", "aXXbYYc", 0, true},
		{"a*b*c", "abc", 0, false},
	}
	for _, tc := range tests {
		if got := globMatch(tc.pattern, tc.value, tc.sep); got != tc.want {
			t.Errorf("globMatch(%q, %q, %q) = %v, want %v", tc.pattern, tc.value, tc.sep, got, tc.want)
		}
	}
}

func TestCertRoleValidation(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	ca := testCA(t, "workload CA")
	leaf, _ := issue(t, ca.Cert, ca.Key, certOpts{cn: "leaf"})
	base := func() CertRole {
		return CertRole{Name: "web", CACertificates: pemOf(ca.Cert), AllowedURIs: []string{"spiffe://example.org/*"}, Policies: []string{"app"}}
	}
	tests := []struct {
		name string
		edit func(*CertRole)
		want string
	}{
		{"bad name", func(r *CertRole) { r.Name = "Web Role" }, "role name"},
		{"no CA", func(r *CertRole) { r.CACertificates = "" }, "no certificate"},
		{"not PEM", func(r *CertRole) { r.CACertificates = "hello" }, "not PEM"},
		{"not a CA", func(r *CertRole) { r.CACertificates = pemOf(leaf) }, "is not a CA"},
		{"wrong block", func(r *CertRole) {
			r.CACertificates = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		}, "unexpected PEM block"},
		{"root policy", func(r *CertRole) { r.Policies = []string{"root"} }, "root policy"},
		{"bad policy", func(r *CertRole) { r.Policies = []string{"A"} }, "policy name"},
		{"empty pattern", func(r *CertRole) { r.AllowedDNSNames = []string{""} }, "bad pattern"},
		{"ttl over limit", func(r *CertRole) { r.TTL = 10000 * time.Hour }, "ttl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := base()
			tc.edit(&r)
			err := s.WriteCertRole(ctx, r)
			wantErr(t, err, ErrInvalid)
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}

	wantErr(t, s.WriteCertRole(ctx, base()), nil)
	got, err := s.ReadCertRole(ctx, "web")
	wantErr(t, err, nil)
	if got.AllowedURIs[0] != "spiffe://example.org/*" {
		t.Fatalf("read back %+v", got)
	}
	names, err := s.ListCertRoles(ctx)
	wantErr(t, err, nil)
	if strings.Join(names, ",") != "web" {
		t.Fatalf("list: %v", names)
	}
	wantErr(t, s.DeleteCertRole(ctx, "web"), nil)
	_, err = s.ReadCertRole(ctx, "web")
	wantErr(t, err, ErrNotFound)
}

func TestLoginWithCert(t *testing.T) {
	s, clock := newService(t)
	ctx := context.Background()
	ca := testCA(t, "workload CA")
	other := testCA(t, "other CA")
	inter, interKey := issue(t, ca.Cert, ca.Key, certOpts{cn: "intermediate", isCA: true})

	wantErr(t, s.WriteCertRole(ctx, CertRole{
		Name: "spiffe", CACertificates: pemOf(ca.Cert),
		AllowedURIs: []string{"spiffe://example.org/ns/*/sa/*"},
		Policies:    []string{"app"}, TTL: time.Hour,
	}), nil)
	wantErr(t, s.WriteCertRole(ctx, CertRole{
		Name: "dns", CACertificates: pemOf(other.Cert, ca.Cert),
		AllowedCommonNames: []string{"svc-*"}, AllowedDNSNames: []string{"*.svc.example.com"},
		Policies: []string{"ops"},
	}), nil)

	spiffe := func(uri string) certOpts { return certOpts{cn: "w", uris: []string{uri}} }
	soon := time.Now().Add(30 * time.Minute)
	tests := []struct {
		name    string
		role    string
		signer  string // "ca" (default), "other", "inter" (chain through the intermediate), "self"
		opts    certOpts
		noChain bool // present only the leaf
		want    error
		check   func(*testing.T, *Token, *x509.Certificate)
	}{
		{name: "SPIFFE ID", role: "spiffe", opts: spiffe("spiffe://example.org/ns/prod/sa/web"), check: func(t *testing.T, tok *Token, _ *x509.Certificate) {
			if strings.Join(tok.Policies, ",") != "app,default" || tok.Parent != "" || tok.Meta["uri"] != "spiffe://example.org/ns/prod/sa/web" {
				t.Fatalf("token %+v", tok)
			}
			if !tok.ExpiresAt.Equal(clock.Now().Add(time.Hour)) {
				t.Fatalf("expires %v, want in an hour", tok.ExpiresAt)
			}
		}},
		{name: "token ends with the certificate", role: "spiffe", opts: certOpts{uris: []string{"spiffe://example.org/ns/a/sa/b"}, notAfter: soon},
			check: func(t *testing.T, tok *Token, leaf *x509.Certificate) {
				if !tok.ExpiresAt.Equal(leaf.NotAfter) || !tok.MaxExpiresAt.Equal(leaf.NotAfter) {
					t.Fatalf("token expires %v (max %v), certificate %v", tok.ExpiresAt, tok.MaxExpiresAt, leaf.NotAfter)
				}
			}},
		{name: "through an intermediate", role: "spiffe", signer: "inter", opts: spiffe("spiffe://example.org/ns/a/sa/b")},
		{name: "intermediate not presented", role: "spiffe", signer: "inter", noChain: true, opts: spiffe("spiffe://example.org/ns/a/sa/b"), want: ErrPermissionDenied},
		{name: "SPIFFE ID one segment too deep", role: "spiffe", opts: spiffe("spiffe://example.org/ns/a/x/sa/b"), want: ErrPermissionDenied},
		{name: "other trust domain", role: "spiffe", opts: spiffe("spiffe://evil.org/ns/a/sa/b"), want: ErrPermissionDenied},
		{name: "no URI", role: "spiffe", opts: certOpts{cn: "w"}, want: ErrPermissionDenied},
		{name: "other CA", role: "spiffe", signer: "other", opts: spiffe("spiffe://example.org/ns/a/sa/b"), want: ErrPermissionDenied},
		{name: "self-signed", role: "spiffe", signer: "self", opts: spiffe("spiffe://example.org/ns/a/sa/b"), want: ErrPermissionDenied},
		{name: "server-only EKU", role: "spiffe", opts: certOpts{uris: []string{"spiffe://example.org/ns/a/sa/b"}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, want: ErrPermissionDenied},
		{name: "unknown role", role: "nope", opts: spiffe("spiffe://example.org/ns/a/sa/b"), want: ErrPermissionDenied},
		{name: "DNS and CN", role: "dns", opts: certOpts{cn: "svc-api", dns: []string{"API.svc.example.com"}}},
		{name: "DNS from the role's second CA", role: "dns", signer: "other", opts: certOpts{cn: "svc-api", dns: []string{"api.svc.example.com"}}},
		{name: "DNS too deep", role: "dns", opts: certOpts{cn: "svc-api", dns: []string{"a.b.svc.example.com"}}, want: ErrPermissionDenied},
		{name: "CN not allowed", role: "dns", opts: certOpts{cn: "admin", dns: []string{"api.svc.example.com"}}, want: ErrPermissionDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var chain []*x509.Certificate
			switch tc.signer {
			case "", "ca":
				leaf, _ := issue(t, ca.Cert, ca.Key, tc.opts)
				chain = []*x509.Certificate{leaf}
			case "other":
				leaf, _ := issue(t, other.Cert, other.Key, tc.opts)
				chain = []*x509.Certificate{leaf}
			case "inter":
				leaf, _ := issue(t, inter, interKey, tc.opts)
				chain = []*x509.Certificate{leaf, inter}
			case "self":
				leaf, _ := issue(t, nil, nil, tc.opts)
				chain = []*x509.Certificate{leaf}
			}
			if tc.noChain {
				chain = chain[:1]
			}
			tok, info, err := s.LoginWithCert(ctx, chain, tc.role)
			wantErr(t, err, tc.want)
			if tc.want != nil {
				return
			}
			got, err := s.Lookup(ctx, tok)
			wantErr(t, err, nil)
			if got.Accessor != info.Accessor {
				t.Fatal("login token does not look up")
			}
			if tc.check != nil {
				tc.check(t, info, chain[0])
			}
		})
	}

	t.Run("no certificate", func(t *testing.T) {
		_, _, err := s.LoginWithCert(ctx, nil, "spiffe")
		wantErr(t, err, ErrPermissionDenied)
	})
	t.Run("certificate expired by the clock", func(t *testing.T) {
		leaf, _ := issue(t, ca.Cert, ca.Key, spiffe("spiffe://example.org/ns/a/sa/b"))
		clock.Add(13 * time.Hour)
		defer clock.Add(-13 * time.Hour)
		_, _, err := s.LoginWithCert(ctx, []*x509.Certificate{leaf}, "spiffe")
		wantErr(t, err, ErrPermissionDenied)
	})
}
