package secrets

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on names and paths.
const (
	MaxPathLength  = 512 // bytes
	MaxPathDepth   = 32  // segments
	MaxMountLength = 64
)

// CheckPath validates a secret path: 1 to MaxPathLength bytes of UTF-8, at
// most MaxPathDepth segments separated by "/", no empty, "." or ".."
// segment (so no leading, trailing or doubled "/"), and no control
// character. A valid path is its own canonical form: policies match it as
// written.
func CheckPath(p string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidPath, clip(p), why)
	}
	switch {
	case p == "":
		return bad("empty")
	case len(p) > MaxPathLength:
		return bad(fmt.Sprintf("longer than %d bytes", MaxPathLength))
	case !utf8.ValidString(p):
		return bad("not UTF-8")
	case strings.IndexFunc(p, unicode.IsControl) >= 0:
		return bad("contains a control character")
	case strings.Count(p, "/")+1 > MaxPathDepth:
		return bad(fmt.Sprintf("deeper than %d segments", MaxPathDepth))
	}
	for seg := range strings.SplitSeq(p, "/") {
		switch seg {
		case "":
			return bad("empty segment (leading, trailing or doubled /)")
		case ".", "..":
			return bad(`"." and ".." segments are not allowed`)
		}
	}
	return nil
}

// checkFolder validates a listing prefix: "" (the mount's root) or a path,
// with or without a trailing "/". It returns the prefix ending in "/", or "".
func checkFolder(p string) (string, error) {
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return "", nil
	}
	if err := CheckPath(p); err != nil {
		return "", err
	}
	return p + "/", nil
}

// checkMount validates a mount name: 1 to MaxMountLength of [A-Za-z0-9_-],
// starting with a letter or digit.
func checkMount(name string) error {
	ok := len(name) >= 1 && len(name) <= MaxMountLength && name[0] != '_' && name[0] != '-'
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w %q: want 1 to %d of [A-Za-z0-9_-], starting with a letter or digit", ErrInvalidMount, clip(name), MaxMountLength)
	}
	return nil
}

// clip shortens user input quoted in an error message.
func clip(s string) string {
	if len(s) <= 80 {
		return s
	}
	return s[:80] + "..."
}
