package secrets

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/kms"
)

// Every refused request gets an error of the right category and leaves
// storage byte for byte as it was.
func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	big := `{"a":"` + strings.Repeat("x", 300<<10) + `"}`
	e.put(t, "m", "s", `{"v":1}`)
	e.put(t, "m", "s", `{"v":2}`)
	e.put(t, "m", "s", big)
	if err := e.s.Destroy(bg, "m", "s", 1); err != nil {
		t.Fatal(err)
	}
	put := func(path, data string) error {
		_, err := e.s.Put(bg, "m", path, []byte(data), WriteOptions{})
		return err
	}
	cas := func(n int) error {
		_, err := e.s.Put(bg, "m", "s", []byte(`{"v":4}`), WriteOptions{CAS: intp(n)})
		return err
	}
	patch := func(data string) error {
		_, err := e.s.Patch(bg, "m", "s", []byte(data), WriteOptions{})
		return err
	}
	meta := func(u MetadataUpdate) error {
		_, err := e.s.PutMetadata(bg, "m", "s", u)
		return err
	}
	get := func(n int) error {
		_, err := e.s.Get(bg, "m", "s", n)
		return err
	}
	tooMany := map[string]string{}
	for i := range MaxCustomKeys + 1 {
		tooMany[strings.Repeat("k", i+1)] = "v"
	}
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"dot-dot", put("a/../b", `{}`), ErrInvalidPath},
		{"dot-dot alone", put("..", `{}`), ErrInvalidPath},
		{"dot segment", put("a/./b", `{}`), ErrInvalidPath},
		{"empty segment", put("a//b", `{}`), ErrInvalidPath},
		{"leading slash", put("/a", `{}`), ErrInvalidPath},
		{"trailing slash", put("a/", `{}`), ErrInvalidPath},
		{"empty path", put("", `{}`), ErrInvalidPath},
		{"NUL", put("a\x00b", `{}`), ErrInvalidPath},
		{"newline", put("a\nb", `{}`), ErrInvalidPath},
		{"DEL", put("a\x7f", `{}`), ErrInvalidPath},
		{"C1 control", put("a\u0085", `{}`), ErrInvalidPath},
		{"not UTF-8", put("a\xff", `{}`), ErrInvalidPath},
		{"too long", put(strings.Repeat("a", MaxPathLength+1), `{}`), ErrInvalidPath},
		{"too deep", put(strings.Repeat("a/", MaxPathDepth)+"a", `{}`), ErrInvalidPath},
		{"array", put("s", `[1]`), ErrInvalidValue},
		{"string", put("s", `"x"`), ErrInvalidValue},
		{"number", put("s", `1`), ErrInvalidValue},
		{"null", put("s", `null`), ErrInvalidValue},
		{"empty", put("s", ``), ErrInvalidValue},
		{"truncated", put("s", `{"a":`), ErrInvalidValue},
		{"trailing data", put("s", `{"a":1} {}`), ErrInvalidValue},
		{"value not UTF-8", put("s", "{\"a\":\"\xff\"}"), ErrInvalidValue},
		{"over the limit", put("s", `{"a":"`+strings.Repeat("x", MaxValueSize)+`"}`), ErrInvalidValue},
		{"cas of an old version", cas(2), ErrCASMismatch},
		{"cas 0 on an existing secret", cas(0), ErrCASMismatch},
		{"cas of a future version", cas(9), ErrCASMismatch},
		{"destroyed version", get(1), ErrVersionDestroyed},
		{"unknown version", get(9), ErrVersionNotFound},
		{"patch not an object", patch(`[]`), ErrInvalidValue},
		{"patch over the limit once merged", patch(`{"b":"` + strings.Repeat("y", 300<<10) + `"}`), kms.ErrInvalid},
		{"delete unknown version", e.s.Delete(bg, "m", "s", 9), ErrVersionNotFound},
		{"delete version 0", e.s.Delete(bg, "m", "s", 0), kms.ErrInvalid},
		{"destroy no version", e.s.Destroy(bg, "m", "s"), kms.ErrInvalid},
		{"destroy negative", e.s.Destroy(bg, "m", "s", -1), kms.ErrInvalid},
		{"undelete unknown", e.s.Undelete(bg, "m", "s", 4), ErrVersionNotFound},
		{"max_versions over the limit", meta(MetadataUpdate{MaxVersions: intp(MaxVersionsLimit + 1)}), kms.ErrInvalid},
		{"negative delete_version_after", meta(MetadataUpdate{DeleteVersionAfter: new(-time.Hour)}), kms.ErrInvalid},
		{"too many custom keys", meta(MetadataUpdate{CustomMetadata: tooMany}), kms.ErrInvalid},
		{"custom value too long", meta(MetadataUpdate{CustomMetadata: map[string]string{"k": strings.Repeat("v", MaxCustomValueLength+1)}}), kms.ErrInvalid},
		{"custom key empty", meta(MetadataUpdate{CustomMetadata: map[string]string{"": "v"}}), kms.ErrInvalid},
		{"move to a bad path", e.s.Move(bg, "m", "s", "x/../y"), ErrInvalidPath},
		{"unknown mount", put2(e, "nope", "s"), ErrMountNotFound},
		{"bad mount name", put2(e, "../m", "s"), ErrInvalidMount},
	}
	// The calls above ran in order; check each error, then that none of
	// them changed storage (the valid writes before are the baseline).
	for _, tc := range cases {
		if !errorsIs(tc.err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.err, tc.want)
		}
		if kms.Category(tc.err) == nil {
			t.Errorf("%s: error %v has no category", tc.name, tc.err)
		}
	}
	md, _ := e.s.ReadMetadata(bg, "m", "s")
	if md.CurrentVersion != 3 || !md.Versions[0].Destroyed || md.Versions[1].Deleted || len(md.CustomMetadata) != 0 || md.MaxVersions != 0 {
		t.Fatalf("metadata changed: %+v", md)
	}
	if got := e.get(t, "m", "s", 0); got != big {
		t.Fatal("current version changed")
	}
	page, _ := e.s.List(bg, "m", "", ListOptions{Recursive: true})
	if strings.Join(page.Keys, ",") != "s" {
		t.Fatalf("secrets after bad input: %v", page.Keys)
	}
}

// The same, byte for byte: a refused call writes nothing at all.
func TestRefusedCallsWriteNothing(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	e.put(t, "m", "s", `{"v":1}`)
	e.put(t, "m", "s", `{"v":2}`)
	e.s.Destroy(bg, "m", "s", 1)
	before := e.dump(t)
	calls := []func() error{
		func() error { return put2(e, "m", "a/../b") },
		func() error { _, err := e.s.Put(bg, "m", "s", []byte(`[]`), WriteOptions{}); return err },
		func() error {
			_, err := e.s.Put(bg, "m", "s", []byte(`{"a":"`+strings.Repeat("x", MaxValueSize)+`"}`), WriteOptions{})
			return err
		},
		func() error { _, err := e.s.Put(bg, "m", "s", []byte(`{}`), WriteOptions{CAS: intp(1)}); return err },
		func() error { _, err := e.s.Get(bg, "m", "s", 1); return err },
		func() error { return e.s.Move(bg, "m", "s", "s/../t") },
		func() error { return e.s.Delete(bg, "m", "s", 7) },
	}
	for i, call := range calls {
		if err := call(); err == nil {
			t.Fatalf("call %d succeeded", i)
		}
		if !sameDump(before, e.dump(t)) {
			t.Fatalf("call %d changed storage", i)
		}
	}
}

func put2(e *env, mount, path string) error {
	_, err := e.s.Put(bg, mount, path, []byte(`{}`), WriteOptions{})
	return err
}

func errorsIs(err, want error) bool {
	return err != nil && kms.Category(err) != nil && errors.Is(err, want)
}
