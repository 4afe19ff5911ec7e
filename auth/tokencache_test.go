package auth

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// The decode cache answers only for the exact bytes it decoded: records
// that differ in any field, however slightly, decode as themselves.
func TestDecodeCacheKeyedByExactBytes(t *testing.T) {
	var c decodeCache
	base := record{Token: Token{Accessor: "a", Policies: []string{"default", "p"}, Meta: map[string]string{"k": "v"}, NumUses: 3, CreatedAt: time.Unix(1, 0).UTC()}}
	variants := []record{base}
	for _, change := range []func(*record){
		func(r *record) { r.NumUses = 2 },
		func(r *record) { r.Revoking = true },
		func(r *record) { r.Policies = []string{"default"} },
		func(r *record) { r.Meta = map[string]string{"k": "w"} },
		func(r *record) { r.ExpiresAt = time.Unix(2, 0).UTC() },
		func(r *record) { r.Accessor = "b" },
	} {
		v := *base.clone()
		change(&v)
		variants = append(variants, v)
	}
	for round := range 2 { // the second round is served from the cache
		for i, want := range variants {
			raw, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.decode(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("round %d, variant %d: decoded %+v, want %+v", round, i, *got, want)
			}
		}
	}
	if _, err := c.decode([]byte(`{"accessor":`)); err == nil {
		t.Fatal("a corrupt record decoded")
	}
}

// What decode returns is the caller's: changing it changes nothing cached.
func TestDecodeCacheReturnsCopies(t *testing.T) {
	var c decodeCache
	raw := []byte(`{"accessor":"a","policies":["default","p"],"meta":{"k":"v"},"created_at":"2026-01-01T00:00:00Z","num_uses":2}`)
	first, err := c.decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	first.NumUses--
	first.Policies[0] = "root"
	first.Meta["k"] = "changed"
	again, err := c.decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if again.NumUses != 2 || again.Policies[0] != "default" || again.Meta["k"] != "v" {
		t.Fatalf("a change to a returned record reached the cache: %+v", again)
	}
}

// Through the service: a use of a limited token and a revocation are seen
// at once, although the token's earlier record was decoded and cached.
func TestAuthenticateSeesChangesPastTheDecodeCache(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	root, _, err := s.CreateRootToken(ctx, "init")
	wantErr(t, err, nil)
	tok, _, err := s.CreateToken(ctx, root, TokenRequest{Policies: []string{"p"}, NumUses: 2})
	wantErr(t, err, nil)
	for want := 1; want >= 0; want-- {
		got, err := s.Authenticate(ctx, tok)
		wantErr(t, err, nil)
		if got.NumUses != want {
			t.Fatalf("uses left %d, want %d", got.NumUses, want)
		}
	}
	if _, err := s.Authenticate(ctx, tok); err == nil {
		t.Fatal("a used-up token authenticated")
	}
	other, _, err := s.CreateToken(ctx, root, TokenRequest{Policies: []string{"p"}})
	wantErr(t, err, nil)
	_, err = s.Authenticate(ctx, other)
	wantErr(t, err, nil)
	wantErr(t, s.Revoke(ctx, other), nil)
	if _, err := s.Authenticate(ctx, other); err == nil {
		t.Fatal("a revoked token authenticated")
	}
}
