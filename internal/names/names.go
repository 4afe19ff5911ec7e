// Package names checks the identifiers custos keys its records by (store
// tables, policy and auth-role names): 1 to max characters of a-z, 0-9,
// '_', '.' and '-', the first a letter or digit. A loop, not a regexp:
// every node checks every table of every command it applies.
package names

// Valid reports whether s is 1 to max characters of [a-z0-9_.-], the first
// a letter or digit.
func Valid(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return false
		}
	}
	return true
}
