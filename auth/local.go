package auth

import (
	"context"

	"github.com/custos-pki/custos/raftstore"
)

// AuthorizeLocal decides from this node's own state, with stale reads and
// no network round trip, whether token grants every capability in c on
// path. It returns the token and the guard of the decision: compares
// (raftstore.OpCompare, over plaintext, for a transaction through the same
// Storage) of the token's record and of the policy version, which every
// policy change replaces, with what the decision was made from (for the
// version, possibly its absence). A write whose transaction carries the
// guard commits only if the token and every policy are, at its commit
// point, what the decision saw: it is then authorised as of that point.
//
// ok is false whenever this node's state does not grant the request: the
// token is malformed or unknown here, revoked, expired or limited-use
// (each use is a write of its own), the policies do not grant c, or a
// read failed. The node may be behind, so none of these is an answer:
// the caller decides as before, with Authenticate and Allowed.
func (s *Service) AuthorizeLocal(ctx context.Context, token, path string, c Capability) (t *Token, guard []raftstore.Op, ok bool) {
	if c == 0 || c&CapDeny != 0 {
		return nil, nil, false
	}
	hash, err := tokenHash(token)
	if err != nil {
		return nil, nil, false
	}
	raw, found, err := s.get(ctx, tableTokens, hash, staleRead...)
	if err != nil || !found {
		return nil, nil, false
	}
	r, err := s.decoded.decode(raw)
	if err != nil || r.Revoking || r.NumUses != 0 || r.expired(s.now()) {
		return nil, nil, false
	}
	acl, version, err := s.authz.acl(ctx, r.Policies)
	if err != nil || acl.capabilities(path)&c != c {
		return nil, nil, false
	}
	guard = []raftstore.Op{{Kind: raftstore.OpCompare, Table: tableTokens, Key: hash, Old: raw}}
	if !acl.root {
		guard = append(guard, raftstore.Op{Kind: raftstore.OpCompare, Table: tableMeta, Key: policyVersionKey, Old: version})
	}
	return &r.Token, guard, true
}
