package secrets

import (
	"encoding/json"
	"errors"
	gopath "path"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzCheckPath: an accepted path is canonical (path.Clean leaves it
// alone, so a policy matches it as written) and within every limit.
func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{"a", "a/b/c", "a/../b", "..", ".", "a//b", "/a", "a/", "a\x00", "ü/ß", "a\u0085", strings.Repeat("a/", 40) + "a", "a/.b", "a/b..", "%2e%2e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		err := CheckPath(p)
		if err != nil {
			if !errors.Is(err, ErrInvalidPath) {
				t.Fatalf("error %v is not ErrInvalidPath", err)
			}
			return
		}
		switch {
		case len(p) == 0 || len(p) > MaxPathLength, !utf8.ValidString(p):
			t.Fatalf("accepted %q: length or encoding", p)
		case gopath.Clean(p) != p, strings.HasPrefix(p, "/"), strings.HasPrefix(p, "../"), p == "..", p == ".":
			t.Fatalf("accepted %q: not canonical", p)
		case strings.IndexFunc(p, unicode.IsControl) >= 0:
			t.Fatalf("accepted %q: control character", p)
		case strings.Count(p, "/") >= MaxPathDepth:
			t.Fatalf("accepted %q: too deep", p)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("accepted %q: segment %q", p, seg)
			}
		}
		if f, err := checkFolder(p + "/"); err != nil || f != p+"/" {
			t.Fatalf("folder %q: %q %v", p, f, err)
		}
	})
}

// FuzzData: accepted data is a compact JSON object within the limit, and
// merging any accepted patch into it gives accepted data.
func FuzzData(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, ` {"a" : [1, {"b":null}]} `, `[]`, `"x"`, `{"a":}`, `{"a":1}{}`, "{\"\xff\":1}", `{"a":{"b":{"c":null}}}`} {
		f.Add([]byte(s), []byte(`{"a":null,"z":{"y":1}}`))
	}
	f.Fuzz(func(t *testing.T, data, patch []byte) {
		out, err := CheckData(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidValue) {
				t.Fatalf("error %v is not ErrInvalidValue", err)
			}
			return
		}
		var m map[string]any
		if len(out) > MaxValueSize || !json.Valid(out) || json.Unmarshal(out, &m) != nil || m == nil {
			t.Fatalf("accepted %q as %q", data, out)
		}
		if _, err := CheckData(patch); err != nil {
			return
		}
		merged, err := mergePatch(out, patch)
		if err != nil {
			if !errors.Is(err, ErrInvalidValue) {
				t.Fatalf("merge: %v", err)
			}
			return
		}
		if _, err := CheckData(merged); err != nil {
			t.Fatalf("merge of %q and %q gave %q: %v", out, patch, merged, err)
		}
	})
}
