package auth

import (
	"context"
	"regexp"
	"strings"
	"testing"
)

func TestAuthorizer(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	policies := map[string]string{
		"app": `{"path": {
			"secret/data/app/*":       {"capabilities": ["read", "list"]},
			"secret/data/app/admin":   {"capabilities": ["deny"]},
			"secret/data/app/+/owned": {"capabilities": ["create", "update"]},
			"sys/seal":                {"capabilities": ["update", "sudo"]}
		}}`,
		"ops": `{"path": {
			"secret/data/app/*":     {"capabilities": ["update"]},
			"secret/data/app/admin": {"capabilities": ["read"]},
			"secret/*":              {"capabilities": ["deny"]}
		}}`,
	}
	for name, doc := range policies {
		wantErr(t, s.WritePolicy(ctx, name, []byte(doc)), nil)
	}
	a := s.Authorizer()
	tests := []struct {
		name     string
		policies []string
		path     string
		cap      Capability
		want     bool
	}{
		{"glob grants read", []string{"app"}, "secret/data/app/db", CapRead, true},
		{"glob grants list", []string{"app"}, "secret/data/app/", CapList, true},
		{"glob does not grant update", []string{"app"}, "secret/data/app/db", CapUpdate, false},
		{"exact deny beats glob", []string{"app"}, "secret/data/app/admin", CapRead, false},
		{"plus rule is more precise than the glob", []string{"app"}, "secret/data/app/x/owned", CapUpdate, true},
		{"plus rule replaces the glob's read", []string{"app"}, "secret/data/app/x/owned", CapRead, false},
		{"deny by default", []string{"app"}, "secret/data/other", CapRead, false},
		{"sudo", []string{"app"}, "sys/seal", CapUpdate | CapSudo, true},
		{"all of a set are needed", []string{"app"}, "secret/data/app/db", CapRead | CapUpdate, false},
		{"same pattern unites", []string{"app", "ops"}, "secret/data/app/db", CapRead | CapUpdate, true},
		{"deny in one policy wins on the same pattern", []string{"app", "ops"}, "secret/data/app/admin", CapRead, false},
		{"less precise deny does not override", []string{"ops"}, "secret/data/app/db", CapUpdate, true},
		{"deny glob", []string{"ops"}, "secret/other", CapRead, false},
		{"unknown policy grants nothing", []string{"nope"}, "secret/data/app/db", CapRead, false},
		{"invalid policy name ignored", []string{"Bad Name"}, "secret/data/app/db", CapRead, false},
		{"root allows everything", []string{"root"}, "sys/anything", CapDelete | CapSudo, true},
		{"default: lookup-self", []string{"default"}, PathLookupSelf, CapRead, true},
		{"default: renew-self", []string{"default"}, PathRenewSelf, CapUpdate, true},
		{"default: nothing else", []string{"default"}, "auth/token/create", CapUpdate, false},
		{"asking for deny is never allowed", []string{"root"}, "x", CapDeny, false},
		{"asking for nothing is never allowed", []string{"root"}, "x", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Allowed(ctx, tc.policies, tc.path, tc.cap)
			wantErr(t, err, nil)
			if got != tc.want {
				t.Fatalf("Allowed(%v, %q, %v) = %v, want %v", tc.policies, tc.path, tc.cap, got, tc.want)
			}
		})
	}
}

// TestAuthorizerInvalidation checks that a policy change is seen both by
// the Service that made it and by another one on the same storage, as a
// second node would be.
func TestAuthorizerInvalidation(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	other, err := New(ctx, s.cfg) // another node's view of the same state
	wantErr(t, err, nil)
	allowed := func(s *Service) bool {
		t.Helper()
		ok, err := s.Authorizer().Allowed(ctx, []string{"p"}, "kv/x", CapRead)
		wantErr(t, err, nil)
		return ok
	}
	check := func(step string, want bool) {
		t.Helper()
		for i, svc := range []*Service{s, other} {
			if got := allowed(svc); got != want {
				t.Fatalf("%s: service %d: allowed = %v, want %v", step, i, got, want)
			}
		}
	}
	check("before", false) // fills both caches
	wantErr(t, s.WritePolicy(ctx, "p", []byte(`{"path":{"kv/*":{"capabilities":["read"]}}}`)), nil)
	check("after write", true)
	wantErr(t, other.WritePolicy(ctx, "p", []byte(`{"path":{"kv/*":{"capabilities":["list"]}}}`)), nil)
	check("after rewrite elsewhere", false)
	wantErr(t, s.WritePolicy(ctx, "p", []byte(`{"path":{"kv/*":{"capabilities":["read"]}}}`)), nil)
	check("after write back", true)
	wantErr(t, other.DeletePolicy(ctx, "p"), nil)
	check("after delete", false)
}

// Policy and role names: 1 to maxNameLen of [a-z0-9_.-], the first a
// letter or digit.
func TestValidName(t *testing.T) {
	rule := regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)
	for _, n := range []string{"", "a", "default", "bench", "a.b-c_d", "_a", ".a", "-a", "A", "aB", "a b", "a/b", "a\n", "é",
		"0abc", strings.Repeat("a", maxNameLen), strings.Repeat("a", maxNameLen+1)} {
		if got, want := validName("policy", n) == nil, len(n) <= maxNameLen && rule.MatchString(n); got != want {
			t.Errorf("validName(%q) accepts: %v, the rule says %v", n, got, want)
		}
	}
}

func TestNormalized(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want bool
	}{
		{nil, true}, {[]string{"a"}, true}, {[]string{"a", "b"}, true},
		{[]string{"b", "a"}, false}, {[]string{"a", "a"}, false}, {[]string{"a", "root"}, false},
		{[]string{"a", "B"}, false},
	} {
		if got := normalized(c.in); got != c.want {
			t.Errorf("normalized(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}
