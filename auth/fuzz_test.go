package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// FuzzParsePolicy: the parser never panics, fails only with ErrInvalid, and
// what it accepts survives a round trip through a canonical document.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		`{"path": {"secret/data/app/*": {"capabilities": ["read", "list"]}}}`,
		`{"path": {"kv/+/x": {"capabilities": ["deny"]}, "kv/*": {"capabilities": ["sudo"]}}}`,
		`{"path": {"a": {"capabilities": ["read"]}, "a": {"capabilities": ["deny"]}}}`,
		`{"path": {"a": {"capabilities": ["read"], "x": 1}}}`,
		`{"path": null}`, `{}`, `[]`, `"x"`, `{"path": {"a": `,
		string(defaultDocument), string(rootDocument),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := ParsePolicy("fuzz", doc)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error outside ErrInvalid: %v", err)
			}
			return
		}
		// Rebuild the document from the parsed rules and parse it again.
		canon := map[string]map[string][]string{}
		for _, r := range p.Rules {
			canon[r.Path] = map[string][]string{"capabilities": r.Capabilities.Names()}
		}
		out, err := json.Marshal(map[string]any{"path": canon})
		if err != nil {
			t.Fatal(err)
		}
		q, err := ParsePolicy("fuzz", out)
		if err != nil {
			t.Fatalf("canonical form %s does not parse: %v", out, err)
		}
		if len(q.Rules) != len(p.Rules) {
			t.Fatalf("round trip changed the rule count: %d -> %d", len(p.Rules), len(q.Rules))
		}
		for i := range p.Rules {
			if !p.pathIn(q, i) {
				t.Fatalf("round trip lost rule %q", p.Rules[i].Path)
			}
		}
	})
}

// pathIn reports whether q has p's i-th rule with the same capabilities.
func (p *Policy) pathIn(q *Policy, i int) bool {
	for _, r := range q.Rules {
		if r.Path == p.Rules[i].Path && r.Capabilities == p.Rules[i].Capabilities {
			return true
		}
	}
	return false
}

// referenceRegexp is an independent statement of what a pattern matches.
func referenceRegexp(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`(?s)^`)
	body := strings.TrimSuffix(p, "*")
	for i, seg := range strings.Split(body, "/") {
		if i > 0 {
			b.WriteString("/")
		}
		if seg == "+" {
			b.WriteString(`[^/]+`)
		} else {
			b.WriteString(regexp.QuoteMeta(seg))
		}
	}
	if strings.HasSuffix(p, "*") {
		b.WriteString(`.*`)
	}
	b.WriteString(`$`)
	return regexp.MustCompile(b.String())
}

// FuzzPatternMatch compares the matcher with a regular expression built
// from the same pattern.
func FuzzPatternMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"secret/data/app/*", "secret/data/app/x"},
		{"kv/+/config", "kv/a/config"},
		{"kv/+/x*", "kv/a/xyz/deep"},
		{"+/*", "a/"},
		{"kv/+/", "kv/a/"},
		{"*", ""},
		{"a/+", "a//"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pat, path string) {
		c, err := compilePattern(pat)
		if err != nil {
			return
		}
		got := c.match(path)
		if want := referenceRegexp(pat).MatchString(path); got != want {
			t.Fatalf("match(%q, %q) = %v, reference says %v", pat, path, got, want)
		}
		if !strings.ContainsAny(pat, "+*") && !c.match(pat) {
			t.Fatalf("exact pattern %q does not match itself", pat)
		}
	})
}

// FuzzGlobMatch compares the certificate-name glob with a regular
// expression.
func FuzzGlobMatch(f *testing.F) {
	f.Add("spiffe://example.org/ns/*/sa/*", "spiffe://example.org/ns/a/sa/b", byte('/'))
	f.Add("*.example.com", "a.example.com", byte('.'))
	f.Add("a*b*c", "aXbYc", byte(0))
	f.Fuzz(func(t *testing.T, pat, v string, sep byte) {
		if len(pat) > 64 || len(v) > 256 {
			return
		}
		star := `.+`
		if sep != 0 {
			star = `[^` + regexp.QuoteMeta(string(rune(sep))) + `]+`
		}
		var b bytes.Buffer
		b.WriteString(`(?s)^`)
		for i, part := range strings.Split(pat, "*") {
			if i > 0 {
				b.WriteString(star)
			}
			b.WriteString(regexp.QuoteMeta(part))
		}
		b.WriteString(`$`)
		re, err := regexp.Compile(b.String())
		if err != nil {
			return
		}
		if got, want := globMatch(pat, v, rune(sep)), re.MatchString(v); got != want {
			t.Fatalf("globMatch(%q, %q, %q) = %v, reference says %v", pat, v, sep, got, want)
		}
	})
}
