package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

func TestRootTokenStoredOnlyAsHash(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	tok, info, err := s.CreateRootToken(ctx, "init")
	wantErr(t, err, nil)
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) != tokenLen {
		t.Fatalf("token has the wrong shape (length %d)", len(tok))
	}
	if !info.IsRoot() || !info.ExpiresAt.IsZero() || info.Parent != "" {
		t.Fatalf("root token: %+v", info)
	}
	got, err := s.Lookup(ctx, tok)
	wantErr(t, err, nil)
	if got.Accessor != info.Accessor {
		t.Fatalf("lookup returned accessor %s, want %s", got.Accessor, info.Accessor)
	}

	// Nothing in any table holds the token; the token table's key is its hash.
	sum := sha256.Sum256([]byte(tok))
	for _, table := range tables {
		page, err := s.store.List(ctx, table, raftstore.ListOptions{})
		wantErr(t, err, nil)
		for _, kv := range page.Items {
			if bytes.Contains(kv.Key, []byte(tok)) || bytes.Contains(kv.Value, []byte(tok)) ||
				bytes.Contains(kv.Value, []byte(tok[len(TokenPrefix):])) {
				t.Fatalf("table %s holds the token", table)
			}
			if table == tableTokens && !bytes.Equal(kv.Key, sum[:]) {
				t.Fatalf("token table key is not the token's SHA-256")
			}
		}
	}
}

func TestCreateChild(t *testing.T) {
	s, clock := newService(t)
	ctx := context.Background()
	root, _, err := s.CreateRootToken(ctx, "root")
	wantErr(t, err, nil)
	parent, pinfo, err := s.CreateToken(ctx, root, TokenRequest{Policies: []string{"a", "b"}, TTL: time.Hour, MaxTTL: 2 * time.Hour})
	wantErr(t, err, nil)
	if want := []string{"a", "b", "default"}; strings.Join(pinfo.Policies, ",") != strings.Join(want, ",") {
		t.Fatalf("parent policies %v, want %v", pinfo.Policies, want)
	}
	limited, _, err := s.CreateToken(ctx, root, TokenRequest{NumUses: 5})
	wantErr(t, err, nil)

	// base builds the default arguments each case overrides.
	base := func() TokenRequest { return TokenRequest{Policies: []string{"a"}, TTL: 10 * time.Minute} }
	tests := []struct {
		name   string
		parent string
		edit   func(*TokenRequest)
		want   error
		check  func(*testing.T, *Token)
	}{
		{name: "subset", parent: parent, check: func(t *testing.T, c *Token) {
			if c.Parent != pinfo.Accessor || !c.ExpiresAt.Equal(clock.Now().Add(10*time.Minute)) {
				t.Fatalf("child %+v", c)
			}
		}},
		{name: "capped at parent expiry", parent: parent, edit: func(r *TokenRequest) { r.TTL = 2 * time.Hour }, check: func(t *testing.T, c *Token) {
			if !c.ExpiresAt.Equal(pinfo.ExpiresAt) || !c.MaxExpiresAt.Equal(pinfo.MaxExpiresAt) {
				t.Fatalf("child expires %v (max %v), parent %v (max %v)", c.ExpiresAt, c.MaxExpiresAt, pinfo.ExpiresAt, pinfo.MaxExpiresAt)
			}
		}},
		{name: "policy not held", parent: parent, edit: func(r *TokenRequest) { r.Policies = []string{"a", "c"} }, want: ErrPermissionDenied},
		{name: "root not held", parent: parent, edit: func(r *TokenRequest) { r.Policies = []string{"root"} }, want: ErrPermissionDenied},
		{name: "root parent grants anything", parent: root, edit: func(r *TokenRequest) { r.Policies = []string{"zzz"} }},
		{name: "negative ttl", parent: parent, edit: func(r *TokenRequest) { r.TTL = -time.Second }, want: ErrInvalid},
		{name: "ttl over max_ttl", parent: parent, edit: func(r *TokenRequest) { r.MaxTTL = time.Minute }, want: ErrInvalid},
		{name: "max_ttl over limit", parent: root, edit: func(r *TokenRequest) { r.MaxTTL = 365 * 24 * time.Hour }, want: ErrInvalid},
		{name: "bad policy name", parent: root, edit: func(r *TokenRequest) { r.Policies = []string{"Bad Name"} }, want: ErrInvalid},
		{name: "control character in display name", parent: root, edit: func(r *TokenRequest) { r.DisplayName = "a\nb" }, want: ErrInvalid},
		{name: "empty metadata key", parent: root, edit: func(r *TokenRequest) { r.Meta = map[string]string{"": "x"} }, want: ErrInvalid},
		{name: "negative uses", parent: root, edit: func(r *TokenRequest) { r.NumUses = -1 }, want: ErrInvalid},
		{name: "limited-use parent", parent: limited, want: ErrPermissionDenied},
		{name: "malformed parent", parent: "cst_nope", want: ErrPermissionDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := base()
			if tc.edit != nil {
				tc.edit(&req)
			}
			tok, info, err := s.CreateToken(ctx, tc.parent, req)
			wantErr(t, err, tc.want)
			if tc.want != nil {
				return
			}
			if tok == tc.parent || !strings.HasPrefix(tok, TokenPrefix) {
				t.Fatal("bad child token")
			}
			if tc.check != nil {
				tc.check(t, info)
			}
		})
	}
}

func TestLookupAndExpiry(t *testing.T) {
	s, clock := newService(t)
	ctx := context.Background()
	root, _, err := s.CreateRootToken(ctx, "root")
	wantErr(t, err, nil)
	tok, info, err := s.CreateToken(ctx, root, TokenRequest{TTL: time.Hour, Renewable: true, DisplayName: "app", Meta: map[string]string{"team": "x"}})
	wantErr(t, err, nil)

	byAcc, err := s.LookupAccessor(ctx, info.Accessor)
	wantErr(t, err, nil)
	if byAcc.DisplayName != "app" || byAcc.Meta["team"] != "x" || !byAcc.Renewable {
		t.Fatalf("lookup by accessor: %+v", byAcc)
	}
	unknown, _ := newToken()
	for _, tc := range []struct {
		name string
		fn   func() error
		want error
	}{
		{"malformed token", func() error { _, err := s.Lookup(ctx, "cst_short"); return err }, ErrPermissionDenied},
		{"no prefix", func() error { _, err := s.Lookup(ctx, strings.Repeat("a", tokenLen)); return err }, ErrPermissionDenied},
		{"unknown token", func() error { _, err := s.Lookup(ctx, unknown); return err }, ErrPermissionDenied},
		{"malformed accessor", func() error { _, err := s.LookupAccessor(ctx, "xyz"); return err }, ErrInvalid},
		{"unknown accessor", func() error { _, err := s.LookupAccessor(ctx, newAccessor()); return err }, ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.fn(), tc.want) })
	}

	clock.Add(time.Hour)
	_, err = s.Lookup(ctx, tok)
	wantErr(t, err, ErrExpired)
	_, err = s.LookupAccessor(ctx, info.Accessor)
	wantErr(t, err, ErrExpired)
	_, err = s.Renew(ctx, tok, 0)
	wantErr(t, err, ErrExpired)
	_, err = s.Lookup(ctx, root) // root tokens never expire
	wantErr(t, err, nil)
}

func TestRenew(t *testing.T) {
	s, clock := newService(t)
	ctx := context.Background()
	root, _, err := s.CreateRootToken(ctx, "root")
	wantErr(t, err, nil)
	parent, _, err := s.CreateToken(ctx, root, TokenRequest{TTL: time.Hour, MaxTTL: 3 * time.Hour, Renewable: true})
	wantErr(t, err, nil)
	child, cinfo, err := s.CreateToken(ctx, parent, TokenRequest{TTL: 30 * time.Minute, Renewable: true})
	wantErr(t, err, nil)
	fixed, _, err := s.CreateToken(ctx, root, TokenRequest{TTL: time.Hour})
	wantErr(t, err, nil)

	clock.Add(20 * time.Minute)
	_, err = s.Renew(ctx, fixed, 0)
	wantErr(t, err, ErrPermissionDenied)
	// The child cannot outlive its parent (expiring at start+1h).
	got, err := s.Renew(ctx, child, time.Hour)
	wantErr(t, err, nil)
	if want := clock.Now().Add(40 * time.Minute); !got.ExpiresAt.Equal(want) {
		t.Fatalf("child renewed to %v, want the parent's expiry %v", got.ExpiresAt, want)
	}
	// The parent renews with its TTL, and then the child can follow.
	p, err := s.Renew(ctx, parent, 0)
	wantErr(t, err, nil)
	if want := clock.Now().Add(time.Hour); !p.ExpiresAt.Equal(want) {
		t.Fatalf("parent renewed to %v, want %v", p.ExpiresAt, want)
	}
	got, err = s.RenewAccessor(ctx, cinfo.Accessor, 50*time.Minute)
	wantErr(t, err, nil)
	if want := clock.Now().Add(50 * time.Minute); !got.ExpiresAt.Equal(want) {
		t.Fatalf("child renewed to %v, want %v", got.ExpiresAt, want)
	}
	// Renewal stops at MaxExpiresAt (start+3h).
	clock.Add(50 * time.Minute)
	wantErr(t, errOf(s.Renew(ctx, parent, 0)), nil)
	clock.Add(50 * time.Minute)
	p, err = s.Renew(ctx, parent, 2*time.Hour)
	wantErr(t, err, nil)
	if !p.ExpiresAt.Equal(p.MaxExpiresAt) {
		t.Fatalf("parent renewed to %v, past its max %v", p.ExpiresAt, p.MaxExpiresAt)
	}
	_, err = s.Renew(ctx, parent, -time.Second)
	wantErr(t, err, ErrInvalid)
}

func errOf(_ *Token, err error) error { return err }

func TestRevokeTree(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	root, _, err := s.CreateRootToken(ctx, "root")
	wantErr(t, err, nil)
	mk := func(parent string) (string, *Token) {
		t.Helper()
		tok, info, err := s.CreateToken(ctx, parent, TokenRequest{})
		wantErr(t, err, nil)
		return tok, info
	}
	a, _ := mk(root)
	b, _ := mk(a)
	c, _ := mk(b)
	d, dinfo := mk(a)
	sibling, _ := mk(root)

	wantErr(t, s.Revoke(ctx, a), nil)
	for _, tok := range []string{a, b, c, d} {
		_, err := s.Lookup(ctx, tok)
		wantErr(t, err, ErrPermissionDenied)
	}
	for _, tok := range []string{root, sibling} {
		_, err := s.Lookup(ctx, tok)
		wantErr(t, err, nil)
	}
	_, err = s.LookupAccessor(ctx, dinfo.Accessor)
	wantErr(t, err, ErrNotFound)
	_, _, err = s.CreateToken(ctx, b, TokenRequest{})
	wantErr(t, err, ErrPermissionDenied)
	wantErr(t, s.Revoke(ctx, a), nil) // again: nothing to do
	wantErr(t, s.RevokeAccessor(ctx, dinfo.Accessor), ErrNotFound)

	// Only root and sibling are left, and the child index holds only root/sibling.
	for table, want := range map[string]int{tableTokens: 2, tableAccessors: 2, tableChildren: 1} {
		page, err := s.store.List(ctx, table, raftstore.ListOptions{KeysOnly: true})
		wantErr(t, err, nil)
		if len(page.Items) != want {
			t.Errorf("%s holds %d entries, want %d", table, len(page.Items), want)
		}
	}
}

func TestInterruptedRevocationAndTidy(t *testing.T) {
	s, clock := newService(t)
	ctx := context.Background()
	root, _, err := s.CreateRootToken(ctx, "root")
	wantErr(t, err, nil)
	parent, _, err := s.CreateToken(ctx, root, TokenRequest{})
	wantErr(t, err, nil)
	child, _, err := s.CreateToken(ctx, parent, TokenRequest{})
	wantErr(t, err, nil)
	short, _, err := s.CreateToken(ctx, root, TokenRequest{TTL: time.Minute})
	wantErr(t, err, nil)

	// A revocation that stops after its first step: the parent is refused
	// at once and cannot gain children, the child still stands.
	hash, _ := tokenHash(parent)
	if _, err := s.markRevoking(ctx, hash); err != nil {
		t.Fatal(err)
	}
	_, err = s.Lookup(ctx, parent)
	wantErr(t, err, ErrPermissionDenied)
	_, _, err = s.CreateToken(ctx, parent, TokenRequest{})
	wantErr(t, err, ErrPermissionDenied)
	_, err = s.Lookup(ctx, child)
	wantErr(t, err, nil)

	clock.Add(2 * time.Minute)
	n, err := s.Tidy(ctx)
	wantErr(t, err, nil)
	if n != 3 { // parent, child, short
		t.Fatalf("tidy removed %d tokens, want 3", n)
	}
	for _, tok := range []string{child, short} {
		_, err := s.Lookup(ctx, tok)
		wantErr(t, err, ErrPermissionDenied)
	}
	if n, err := s.Tidy(ctx); n != 0 || err != nil {
		t.Fatalf("second tidy: %d, %v", n, err)
	}
}

func TestLimitedUseTokenConcurrently(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	root, _, err := s.CreateRootToken(ctx, "root")
	wantErr(t, err, nil)
	tok, _, err := s.CreateToken(ctx, root, TokenRequest{NumUses: 3})
	wantErr(t, err, nil)
	// Lookup does not use the token up.
	if info, err := s.Lookup(ctx, tok); err != nil || info.NumUses != 3 {
		t.Fatalf("lookup: %v, %v", info, err)
	}

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		ok     int
		denied int
	)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Authenticate(ctx, tok)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case strings.Contains(err.Error(), "invalid token"):
				denied++
			default:
				t.Errorf("authenticate: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 3 || denied != 3 {
		t.Fatalf("%d uses allowed and %d denied, want 3 and 3", ok, denied)
	}
	// Unlimited tokens are not written to on use.
	_, err = s.Authenticate(ctx, root)
	wantErr(t, err, nil)
}
