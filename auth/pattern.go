package auth

import (
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxPatternLen bounds a policy path pattern.
const maxPatternLen = 512

// pattern is a compiled policy path pattern: a path, optionally ending in
// "*" (matches any suffix, slashes included), whose segments may be "+"
// (matches exactly one non-empty segment).
type pattern struct {
	raw       string
	segs      []string // raw split on "/"; nil when there is no "+"
	glob      bool     // raw ends in "*"
	plus      int      // number of "+" segments
	firstWild int      // byte offset of the first "+" or "*"; MaxInt if none
}

// compilePattern validates and compiles a policy path pattern. Its errors
// carry no category; callers wrap them with ErrInvalid.
func compilePattern(p string) (pattern, error) {
	bad := func(why string) (pattern, error) {
		return pattern{}, fmt.Errorf("bad path pattern %q: %s", truncate(p, 80), why)
	}
	switch {
	case p == "":
		return bad("empty")
	case len(p) > maxPatternLen:
		return bad(fmt.Sprintf("longer than %d bytes", maxPatternLen))
	case !utf8.ValidString(p):
		return bad("not UTF-8")
	case strings.HasPrefix(p, "/"):
		return bad("must not start with /")
	case strings.IndexFunc(p, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return bad("contains a space or control character")
	}
	if i := strings.IndexByte(p, '*'); i >= 0 && i != len(p)-1 {
		return bad(`"*" is allowed only at the end`)
	}
	c := pattern{raw: p, glob: strings.HasSuffix(p, "*"), firstWild: math.MaxInt}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		last := i == len(segs)-1
		switch {
		case s == "" && !last:
			return bad("empty segment")
		case s == "." || s == "..":
			return bad(`"." and ".." segments are not allowed`)
		case s == "+":
			c.plus++
		case strings.Contains(s, "+"):
			return bad(`"+" must be a whole segment`)
		}
	}
	if c.plus > 0 {
		c.segs = segs
	}
	if i := strings.IndexAny(p, "+*"); i >= 0 {
		c.firstWild = i
	}
	return c, nil
}

// match reports whether path matches the pattern.
func (c *pattern) match(path string) bool {
	if c.segs == nil {
		if c.glob {
			return strings.HasPrefix(path, c.raw[:len(c.raw)-1])
		}
		return path == c.raw
	}
	rest := path
	for i, s := range c.segs {
		last := i == len(c.segs)-1
		if last && c.glob {
			return strings.HasPrefix(rest, s[:len(s)-1])
		}
		seg, tail, more := strings.Cut(rest, "/")
		if s == "+" {
			if seg == "" {
				return false
			}
		} else if seg != s {
			return false
		}
		if last {
			return !more
		}
		if !more {
			return false
		}
		rest = tail
	}
	return false // unreachable: segs is never empty
}

// morePrecise reports whether a takes priority over b when both match a
// path. The order is Vault's: a later first wildcard wins; then a pattern
// without the trailing "*"; then fewer "+" segments; then the longer
// pattern; then the lexicographically larger one.
func (a *pattern) morePrecise(b *pattern) bool {
	switch {
	case a.firstWild != b.firstWild:
		return a.firstWild > b.firstWild
	case a.glob != b.glob:
		return !a.glob
	case a.plus != b.plus:
		return a.plus < b.plus
	case len(a.raw) != len(b.raw):
		return len(a.raw) > len(b.raw)
	}
	return a.raw > b.raw
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
