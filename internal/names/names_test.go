package names

import (
	"regexp"
	"testing"
)

// Valid is the rule the regexp ^[a-z0-9][a-z0-9_.-]{0,max-1}$ states.
func FuzzValid(f *testing.F) {
	re := regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	for _, s := range []string{"", "kv", "auth.tokens", "a_b-c.d", "_meta", "-x", ".x", "Kv", "k v", "k\n", "kv\x00",
		"t/kv", "\u00e9", string(make([]byte, 64)), "0123456789012345678901234567890123456789012345678901234567890123",
		"01234567890123456789012345678901234567890123456789012345678901234"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := Valid(s, 64), re.MatchString(s); got != want {
			t.Fatalf("Valid(%q, 64) = %v, the rule says %v", s, got, want)
		}
	})
}
