package secrets

import (
	"slices"
	"strings"
	"testing"

	"github.com/custos-pki/custos/kms"
)

func listTree(t *testing.T) *env {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	e.mount(t, "other", MountOptions{})
	for _, p := range []string{"a", "a-b", "a/b", "a/c/d", "a/c/e", "a0", "app/one", "app/two", "z/y/x", "ü/ß"} {
		e.put(t, "m", p, `{}`)
	}
	e.put(t, "other", "a/b", `{}`)
	for p, team := range map[string]string{"a/b": "x", "a/c/e": "x", "app/one": "y", "a0": "x"} {
		if _, err := e.s.PutMetadata(bg, "m", p, MetadataUpdate{CustomMetadata: map[string]string{"team": team, "env": "prod"}}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func TestList(t *testing.T) {
	e := listTree(t)
	cases := []struct {
		name   string
		folder string
		o      ListOptions
		want   string
	}{
		{"root", "", ListOptions{}, "a a-b a/ a0 app/ z/ ü/"},
		{"folder", "a", ListOptions{}, "b c/"},
		{"folder with slash", "a/", ListOptions{}, "b c/"},
		{"deeper", "a/c", ListOptions{}, "d e"},
		{"a secret is not a folder", "a/b", ListOptions{}, ""},
		{"missing", "nope", ListOptions{}, ""},
		{"recursive", "", ListOptions{Recursive: true}, "a a-b a/b a/c/d a/c/e a0 app/one app/two z/y/x ü/ß"},
		{"recursive folder", "a", ListOptions{Recursive: true}, "b c/d c/e"},
		{"filter", "", ListOptions{Recursive: true, Filter: map[string]string{"team": "x"}}, "a/b a/c/e a0"},
		{"filter two pairs", "", ListOptions{Recursive: true, Filter: map[string]string{"team": "y", "env": "prod"}}, "app/one"},
		{"filter one level", "", ListOptions{Filter: map[string]string{"team": "x"}}, "a0"},
		{"filter no match", "", ListOptions{Recursive: true, Filter: map[string]string{"team": "q"}}, ""},
		{"after", "", ListOptions{After: "a/"}, "a0 app/ z/ ü/"},
	}
	for _, pageSize := range []int{0, 1, 2} {
		e.s.listPageSize = pageSize
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				page, err := e.s.List(bg, "m", tc.folder, tc.o)
				if err != nil {
					t.Fatal(err)
				}
				if pageSize == 0 {
					if got := strings.Join(page.Keys, " "); got != tc.want || page.Next != "" {
						t.Fatalf("page size %d: got %q next %q, want %q", pageSize, got, page.Next, tc.want)
					}
				}
				// Page by page, with every limit, the same names in order.
				for limit := 1; limit <= 3; limit++ {
					o := tc.o
					o.Limit = limit
					var all []string
					for range 100 {
						p, err := e.s.List(bg, "m", tc.folder, o)
						if err != nil {
							t.Fatal(err)
						}
						if len(p.Keys) > limit {
							t.Fatalf("%d keys over limit %d", len(p.Keys), limit)
						}
						all = append(all, p.Keys...)
						if p.Next == "" {
							break
						}
						o.After = p.Next
					}
					if got := strings.Join(all, " "); got != tc.want {
						t.Fatalf("page size %d, limit %d: got %q, want %q", pageSize, limit, got, tc.want)
					}
				}
			})
		}
	}
}

func TestListBadInput(t *testing.T) {
	e := listTree(t)
	for _, tc := range []struct {
		folder string
		o      ListOptions
	}{
		{"../a", ListOptions{}}, {"a//b", ListOptions{}}, {"/a", ListOptions{}}, {"a\x00", ListOptions{}},
		{"", ListOptions{Limit: -1}}, {"", ListOptions{Limit: DefaultListLimit + 1}},
		{"", ListOptions{After: "a\nb"}}, {"", ListOptions{After: strings.Repeat("a", MaxPathLength+2)}},
	} {
		if _, err := e.s.List(bg, "m", tc.folder, tc.o); !errorsIsInvalid(err) {
			t.Errorf("List(%q, %+v): %v", tc.folder, tc.o, err)
		}
	}
	_, err := e.s.List(bg, "nope", "", ListOptions{})
	wantErr(t, err, ErrMountNotFound)
}

func errorsIsInvalid(err error) bool { return kms.Category(err) == kms.ErrInvalid }

// A listing of a large folder skips each sub-folder's records.
func TestListSkipsSubtrees(t *testing.T) {
	e := newEnv(t)
	e.mount(t, "m", MountOptions{})
	var want []string
	for i := range 5 {
		dir := string(rune('a'+i)) + "/"
		want = append(want, dir)
		for j := range 6 {
			e.put(t, "m", dir+strings.Repeat("x", j+1), `{}`)
		}
	}
	e.s.listPageSize = 2 // so at most 6 records are looked at per call
	var all []string
	o := ListOptions{}
	for calls := 0; ; calls++ {
		p, err := e.s.List(bg, "m", "", o)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.Keys...)
		if p.Next == "" {
			break
		}
		if calls >= 1 {
			t.Fatal("more than two calls: sub-folders were walked, not skipped")
		}
		o.After = p.Next
	}
	if !slices.Equal(all, want) {
		t.Fatalf("got %v, want %v", all, want)
	}
}
