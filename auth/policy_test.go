package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr string // substring; "" means valid
		rules   int
	}{
		{"one rule", `{"path": {"secret/data/app/*": {"capabilities": ["read", "list"]}}}`, "", 1},
		{"plus and deny", `{"path": {"kv/+/x": {"capabilities": ["deny"]}, "kv/*": {"capabilities": ["create","update","delete","sudo"]}}}`, "", 2},
		{"trailing slash", `{"path": {"secret/": {"capabilities": ["list"]}}}`, "", 1},
		{"unknown capability", `{"path": {"a": {"capabilities": ["reed"]}}}`, `unknown capability "reed"`, 0},
		{"no capabilities", `{"path": {"a": {"capabilities": []}}}`, "no capabilities", 0},
		{"null capabilities", `{"path": {"a": {"capabilities": null}}}`, "no capabilities", 0},
		{"capabilities not a list", `{"path": {"a": {"capabilities": "read"}}}`, "want a list of strings", 0},
		{"unknown rule field", `{"path": {"a": {"capabilities": ["read"], "policy": "write"}}}`, `unknown field "policy"`, 0},
		{"unknown top field", `{"paths": {}}`, `unknown field "paths"`, 0},
		{"duplicate path", `{"path": {"a": {"capabilities": ["read"]}, "a": {"capabilities": ["deny"]}}}`, `duplicate path "a"`, 0},
		{"duplicate capabilities", `{"path": {"a": {"capabilities": ["deny"], "capabilities": ["read"]}}}`, "duplicate field", 0},
		{"duplicate path field", `{"path": {"a": {"capabilities": ["read"]}}, "path": {}}`, `duplicate field "path"`, 0},
		{"empty", `{}`, "no path rules", 0},
		{"not an object", `[]`, "want a JSON object", 0},
		{"trailing data", `{"path": {"a": {"capabilities": ["read"]}}} {}`, "trailing data", 0},
		{"malformed", `{"path": {"a": `, "malformed JSON", 0},
		{"star in the middle", `{"path": {"a/*/b": {"capabilities": ["read"]}}}`, `"*" is allowed only at the end`, 0},
		{"plus in a segment", `{"path": {"a/b+/c": {"capabilities": ["read"]}}}`, `"+" must be a whole segment`, 0},
		{"leading slash", `{"path": {"/a": {"capabilities": ["read"]}}}`, "must not start with /", 0},
		{"empty segment", `{"path": {"a//b": {"capabilities": ["read"]}}}`, "empty segment", 0},
		{"dot dot", `{"path": {"a/../b": {"capabilities": ["read"]}}}`, `".." segments`, 0},
		{"empty pattern", `{"path": {"": {"capabilities": ["read"]}}}`, "empty", 0},
		{"space", `{"path": {"a b": {"capabilities": ["read"]}}}`, "space", 0},
		{"too long", `{"path": {"` + strings.Repeat("a", maxPatternLen+1) + `": {"capabilities": ["read"]}}}`, "longer than", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePolicy("test", []byte(tc.doc))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Rules) != tc.rules {
					t.Fatalf("%d rules, want %d", len(p.Rules), tc.rules)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want ErrInvalid with %q", err, tc.wantErr)
			}
		})
	}
	for _, name := range []string{"", "Upper", "-lead", "sp ace", strings.Repeat("a", maxNameLen+1)} {
		if _, err := ParsePolicy(name, []byte(`{"path":{"a":{"capabilities":["read"]}}}`)); !errors.Is(err, ErrInvalid) {
			t.Errorf("name %q: got %v, want ErrInvalid", name, err)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{"secret/data/app", []string{"secret/data/app"}, []string{"secret/data/app/", "secret/data/ap", "secret/data/apps"}},
		{"secret/data/app/*", []string{"secret/data/app/", "secret/data/app/x", "secret/data/app/x/y"}, []string{"secret/data/app", "secret/data/apps"}},
		{"secret/data/app*", []string{"secret/data/app", "secret/data/apps", "secret/data/app/x"}, []string{"secret/data/ap"}},
		{"*", []string{"", "anything/at/all"}, nil},
		{"kv/+/config", []string{"kv/a/config", "kv/long-name/config"}, []string{"kv//config", "kv/a/b/config", "kv/a/config/", "kv/config"}},
		{"kv/+/+", []string{"kv/a/b"}, []string{"kv/a", "kv/a/b/c", "kv/a/"}},
		{"kv/+/x*", []string{"kv/a/x", "kv/a/xyz/deep"}, []string{"kv/a/y", "kv/a"}},
		{"+/*", []string{"a/", "a/b/c"}, []string{"a", "/a"}},
		{"kv/+/", []string{"kv/a/"}, []string{"kv/a", "kv/a/b"}},
	}
	for _, tc := range tests {
		t.Run(tc.pattern, func(t *testing.T) {
			p, err := compilePattern(tc.pattern)
			if err != nil {
				t.Fatal(err)
			}
			for _, path := range tc.match {
				if !p.match(path) {
					t.Errorf("%q does not match %q", tc.pattern, path)
				}
			}
			for _, path := range tc.noMatch {
				if p.match(path) {
					t.Errorf("%q matches %q", tc.pattern, path)
				}
			}
		})
	}
}

func TestPatternPriority(t *testing.T) {
	// Each pair: the first takes priority over the second.
	pairs := [][2]string{
		{"secret/app/config", "secret/app/*"},      // exact over glob
		{"secret/app/*", "secret/*"},               // later wildcard
		{"secret/+/config", "secret/*"},            // no trailing "*"
		{"secret/app/+", "secret/+/config"},        // later first wildcard
		{"a/+/b/c", "a/+/+/c"},                     // fewer "+"
		{"secret/app*", "secret/ap*"},              // longer
		{"secret/b*", "secret/a*"},                 // lexicographically larger
		{"secret/data/app/x", "secret/data/app/+"}, // exact over plus
	}
	for _, pr := range pairs {
		a, err := compilePattern(pr[0])
		if err != nil {
			t.Fatal(err)
		}
		b, err := compilePattern(pr[1])
		if err != nil {
			t.Fatal(err)
		}
		if !a.morePrecise(&b) || b.morePrecise(&a) {
			t.Errorf("%q should take priority over %q", pr[0], pr[1])
		}
	}
}

func TestPolicyStorage(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	doc := []byte(`{"path": {"secret/data/app/*": {"capabilities": ["read"]}}}`)
	wantErr(t, s.WritePolicy(ctx, "app", doc), nil)
	p, err := s.ReadPolicy(ctx, "app")
	wantErr(t, err, nil)
	if string(p.Document) != string(doc) || len(p.Rules) != 1 || p.Rules[0].Capabilities != CapRead {
		t.Fatalf("read back %+v", p)
	}
	names, err := s.ListPolicies(ctx)
	wantErr(t, err, nil)
	if got := strings.Join(names, ","); got != "app,default,root" {
		t.Fatalf("list: %s", got)
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"write root", s.WritePolicy(ctx, PolicyRoot, doc), ErrInvalid},
		{"delete root", s.DeletePolicy(ctx, PolicyRoot), ErrInvalid},
		{"delete default", s.DeletePolicy(ctx, PolicyDefault), ErrInvalid},
		{"bad document", s.WritePolicy(ctx, "x", []byte(`{"path":{"a":{"capabilities":["fly"]}}}`)), ErrInvalid},
		{"bad name", s.WritePolicy(ctx, "X", doc), ErrInvalid},
		{"read missing", errOfPolicy(s.ReadPolicy(ctx, "missing")), ErrNotFound},
		{"delete missing", s.DeletePolicy(ctx, "missing"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.err, tc.want) })
	}
	for _, name := range []string{PolicyRoot, PolicyDefault} {
		if _, err := s.ReadPolicy(ctx, name); err != nil {
			t.Errorf("read built-in %s: %v", name, err)
		}
	}
	wantErr(t, s.DeletePolicy(ctx, "app"), nil)
	_, err = s.ReadPolicy(ctx, "app")
	wantErr(t, err, ErrNotFound)
}

func errOfPolicy(_ *Policy, err error) error { return err }
