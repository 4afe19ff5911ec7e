package auth

import (
	"context"
	"testing"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// guardHolds commits a write carrying guard and reports whether it did,
// and, if not, which compare of the guard failed.
func guardHolds(t *testing.T, s *Service, guard []raftstore.Op) (bool, int) {
	t.Helper()
	ops := append(append([]raftstore.Op{}, guard...), raftstore.Op{Kind: raftstore.OpPut, Table: tableRoles, Key: []byte("written"), Value: []byte("x")})
	res, err := s.store.Txn(context.Background(), ops)
	if err != nil {
		t.Fatal(err)
	}
	return res.Succeeded, res.FailedOp
}

func TestAuthorizeLocalAndItsGuard(t *testing.T) {
	s, clock := newService(t)
	ctx := context.Background()
	wantErr(t, s.WritePolicy(ctx, "app", []byte(`{"path":{"kv/*":{"capabilities":["update"]}}}`)), nil)
	root, _, err := s.CreateRootToken(ctx, "root")
	wantErr(t, err, nil)
	tok, _, err := s.CreateToken(ctx, root, TokenRequest{Policies: []string{"app"}, TTL: time.Hour})
	wantErr(t, err, nil)

	tk, guard, ok := s.AuthorizeLocal(ctx, tok, "kv/a", CapUpdate)
	if !ok || tk == nil || len(guard) != 2 {
		t.Fatalf("AuthorizeLocal = %v, %d ops, %v", tk, len(guard), ok)
	}
	if held, _ := guardHolds(t, s, guard); !held {
		t.Fatal("the guard of a current decision fails")
	}
	// Root needs no policy, so its guard is its record alone.
	if _, rg, ok := s.AuthorizeLocal(ctx, root, "anything", CapDelete); !ok || len(rg) != 1 {
		t.Fatalf("root: %d ops, %v", len(rg), ok)
	}

	// What this node's state does not grant is no answer: ok is false.
	limited, _, err := s.CreateToken(ctx, root, TokenRequest{Policies: []string{"app"}, NumUses: 3})
	wantErr(t, err, nil)
	short, _, err := s.CreateToken(ctx, root, TokenRequest{Policies: []string{"app"}, TTL: time.Minute})
	wantErr(t, err, nil)
	for name, c := range map[string]struct {
		tok, path string
		need      Capability
	}{
		"denied path":       {tok, "other/a", CapUpdate},
		"denied capability": {tok, "kv/a", CapDelete},
		"malformed token":   {"cst_nope", "kv/a", CapUpdate},
		"unknown token":     {"cst_" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "kv/a", CapUpdate},
		"limited use":       {limited, "kv/a", CapUpdate},
		"deny":              {root, "kv/a", CapDeny},
	} {
		if _, _, ok := s.AuthorizeLocal(ctx, c.tok, c.path, c.need); ok {
			t.Errorf("%s: allowed", name)
		}
	}
	clock.Add(2 * time.Minute)
	if _, _, ok := s.AuthorizeLocal(ctx, short, "kv/a", CapUpdate); ok {
		t.Error("expired token: allowed")
	}

	// Any policy change, even of another policy, fails the policy compare.
	wantErr(t, s.WritePolicy(ctx, "unrelated", []byte(`{"path":{"x":{"capabilities":["read"]}}}`)), nil)
	if held, failed := guardHolds(t, s, guard); held || failed != 1 {
		t.Fatalf("after a policy write: held %v, failed op %d", held, failed)
	}
	_, guard, ok = s.AuthorizeLocal(ctx, tok, "kv/a", CapUpdate)
	if !ok {
		t.Fatal("not allowed after an unrelated policy change")
	}
	// A revocation fails the token compare.
	wantErr(t, s.Revoke(ctx, tok), nil)
	if held, failed := guardHolds(t, s, guard); held || failed != 0 {
		t.Fatalf("after revocation: held %v, failed op %d", held, failed)
	}
	if _, _, ok := s.AuthorizeLocal(ctx, tok, "kv/a", CapUpdate); ok {
		t.Fatal("revoked token: allowed")
	}
	if _, err := s.store.Get(ctx, tableRoles, []byte("written")); err != nil {
		t.Fatalf("the successful write is missing: %v", err)
	}
}

// Before any policy is written, the guard requires the version to be
// absent: writing the first policy fails it.
func TestAuthorizeLocalGuardsAnAbsentPolicyVersion(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	root, _, err := s.CreateRootToken(ctx, "root")
	wantErr(t, err, nil)
	tok, _, err := s.CreateToken(ctx, root, TokenRequest{TTL: time.Hour})
	wantErr(t, err, nil)
	_, guard, ok := s.AuthorizeLocal(ctx, tok, PathRenewSelf, CapUpdate)
	if !ok || len(guard) != 2 || guard[1].Old != nil {
		t.Fatalf("default policy: %v %+v", ok, guard)
	}
	wantErr(t, s.WritePolicy(ctx, PolicyDefault, []byte(`{"path":{"nothing":{"capabilities":["read"]}}}`)), nil)
	if held, failed := guardHolds(t, s, guard); held || failed != 1 {
		t.Fatalf("after the first policy write: held %v, failed op %d", held, failed)
	}
	if _, _, ok := s.AuthorizeLocal(ctx, tok, PathRenewSelf, CapUpdate); ok {
		t.Fatal("allowed after the default policy was narrowed")
	}
}
