package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// errContention is returned when a compare-and-swap keeps losing.
var errContention = errors.New("auth: too much contention on one token, try again")

// Renew extends a renewable token's expiry to increment from now (its TTL
// when increment is 0), capped by its MaxExpiresAt and its parent's expiry.
// Renewal never shortens a token. A root token, which never expires, is
// returned unchanged.
func (s *Service) Renew(ctx context.Context, token string, increment time.Duration) (*Token, error) {
	hash, err := tokenHash(token)
	if err != nil {
		return nil, err
	}
	return s.renew(ctx, hash, increment)
}

// RenewAccessor is Renew for the token with this accessor.
func (s *Service) RenewAccessor(ctx context.Context, accessor string, increment time.Duration) (*Token, error) {
	hash, err := s.accessorHash(ctx, accessor)
	if err != nil {
		return nil, err
	}
	return s.renew(ctx, hash, increment)
}

func (s *Service) renew(ctx context.Context, hash []byte, increment time.Duration) (*Token, error) {
	if increment < 0 {
		return nil, fmt.Errorf("%w: increment must not be negative", ErrInvalid)
	}
	for range maxCASRetries {
		raw, r, err := s.load(ctx, hash)
		if err != nil {
			return nil, err
		}
		if r.ExpiresAt.IsZero() {
			return &r.Token, nil
		}
		if !r.Renewable {
			return nil, fmt.Errorf("%w: token is not renewable", ErrPermissionDenied)
		}
		inc := increment
		if inc == 0 {
			inc = r.TTL
		}
		exp := earliest(s.now().Add(inc), r.MaxExpiresAt)
		ops := []raftstore.Op{{Kind: raftstore.OpCAS, Table: tableTokens, Key: hash, Old: raw}}
		if r.Parent != "" {
			p, err := s.parentOf(ctx, r)
			if err != nil {
				return nil, err
			}
			exp = earliest(exp, p.ExpiresAt)
			// Abort if the parent's revocation starts meanwhile.
			ops = append(ops, raftstore.Op{Kind: raftstore.OpGet, Table: tableAccessors, Key: []byte(r.Parent)})
		}
		if !exp.After(r.ExpiresAt) {
			return &r.Token, nil
		}
		r.ExpiresAt = exp
		if ops[0].Value, err = json.Marshal(r); err != nil {
			return nil, fmt.Errorf("auth: encode token: %w", err)
		}
		res, err := s.store.Txn(ctx, ops)
		if err != nil {
			return nil, fmt.Errorf("auth: renew token: %w", err)
		}
		if res.Succeeded {
			return &r.Token, nil
		}
		if res.FailedOp == 1 {
			return nil, fmt.Errorf("%w: the parent token is revoked", ErrPermissionDenied)
		}
	}
	return nil, errContention
}

// parentOf reads the valid parent of r.
func (s *Service) parentOf(ctx context.Context, r *record) (*record, error) {
	hash, found, err := s.get(ctx, tableAccessors, []byte(r.Parent))
	if err != nil {
		return nil, fmt.Errorf("auth: read parent token: %w", err)
	}
	if !found {
		return nil, fmt.Errorf("%w: the parent token is revoked", ErrPermissionDenied)
	}
	_, p, err := s.load(ctx, hash)
	if err != nil {
		return nil, fmt.Errorf("%w: the parent token is no longer valid", ErrPermissionDenied)
	}
	return p, nil
}

// Revoke revokes a token and all its descendants. Revoking an unknown
// token does nothing; expired tokens are revoked like any other.
func (s *Service) Revoke(ctx context.Context, token string) error {
	hash, err := tokenHash(token)
	if err != nil {
		return err
	}
	_, err = s.revokeTree(ctx, hash)
	return err
}

// RevokeAccessor is Revoke for the token with this accessor. A token
// whose revocation has started has no accessor entry: ErrNotFound.
func (s *Service) RevokeAccessor(ctx context.Context, accessor string) error {
	hash, err := s.accessorHash(ctx, accessor)
	if err != nil {
		return err
	}
	_, err = s.revokeTree(ctx, hash)
	return err
}

// revokeTree revokes the token under hash and its descendants, children
// first, and returns how many tokens it removed. Each step is durable, so
// an interrupted revocation is finished by calling it again.
func (s *Service) revokeTree(ctx context.Context, hash []byte) (int, error) {
	r, err := s.markRevoking(ctx, hash)
	if err != nil || r == nil {
		return 0, err
	}
	n := 0
	prefix := childKey(r.Accessor, "")
	for {
		// Revoked children leave the index, so each pass starts over.
		page, err := s.store.List(ctx, tableChildren, raftstore.ListOptions{Prefix: prefix, Limit: 100})
		if err != nil {
			return n, fmt.Errorf("auth: list child tokens: %w", err)
		}
		if len(page.Items) == 0 {
			break
		}
		for _, kv := range page.Items {
			m, err := s.revokeTree(ctx, kv.Value)
			n += m
			if err != nil {
				return n, err
			}
			if m == 0 { // index entry without a token
				if err := s.store.Delete(ctx, tableChildren, kv.Key); err != nil {
					return n, fmt.Errorf("auth: revoke token: %w", err)
				}
			}
		}
	}
	ops := []raftstore.Op{
		{Kind: raftstore.OpDelete, Table: tableTokens, Key: hash},
		{Kind: raftstore.OpDelete, Table: tableAccessors, Key: []byte(r.Accessor)},
	}
	if r.Parent != "" {
		ops = append(ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableChildren, Key: childKey(r.Parent, r.Accessor)})
	}
	if r.Cert != "" {
		ops = append(ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableCertToks, Key: certTokenKey(r.Cert, r.Accessor)})
	}
	if _, err := s.store.Txn(ctx, ops); err != nil {
		return n, fmt.Errorf("auth: revoke token: %w", err)
	}
	return n + 1, nil
}

// markRevoking sets Revoking on the record under hash and removes its
// accessor entry, so that the token is refused and no child can be created
// under it. It returns nil if there is no such token.
func (s *Service) markRevoking(ctx context.Context, hash []byte) (*record, error) {
	for range maxCASRetries {
		raw, r, err := s.read(ctx, hash)
		if err != nil || r == nil || r.Revoking {
			return r, err
		}
		r.Revoking = true
		marked, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("auth: encode token: %w", err)
		}
		res, err := s.store.Txn(ctx, []raftstore.Op{
			{Kind: raftstore.OpCAS, Table: tableTokens, Key: hash, Old: raw, Value: marked},
			{Kind: raftstore.OpDelete, Table: tableAccessors, Key: []byte(r.Accessor)},
		})
		if err != nil {
			return nil, fmt.Errorf("auth: revoke token: %w", err)
		}
		if res.Succeeded {
			return r, nil
		}
	}
	return nil, errContention
}

// Tidy removes expired tokens (with their descendants) and finishes
// interrupted revocations. It returns how many tokens it removed. Run it
// periodically on one node (the leader); it is safe to run concurrently
// with anything else.
func (s *Service) Tidy(ctx context.Context) (int, error) {
	now := s.now()
	n := 0
	err := s.listAll(ctx, tableTokens, nil, false, func(kv raftstore.KV) error {
		var r record
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return fmt.Errorf("auth: tidy: corrupt token record: %w", err)
		}
		if !r.Revoking && !r.expired(now) {
			return nil
		}
		m, err := s.revokeTree(ctx, kv.Key)
		n += m
		return err
	})
	return n, err
}
