package node

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/custos-pki/custos/api"
)

// A secret write is authorised from the state of the node it reaches and
// proves that authorisation at its commit. These run on three real nodes,
// each change made through one node and the write sent at once through a
// follower, which may not have applied the change yet: a revocation or a
// narrowed policy must still refuse the write and change nothing; a new
// token or a widened policy must still allow it.
func TestSecretWritesThroughAFollowerAreAuthorisedAtTheirCommit(t *testing.T) {
	tc := newTestCluster(t, 3)
	leader, follower := tc.leaderAndFollower(t)
	other := 3 - leader - follower
	as := func(i int, tok string) *client {
		c := newClient(t, tc.nodes[i], tc.caFile)
		c.token = tok
		return c
	}
	admin := as(leader, tc.root)
	admin.must("POST", "/v1/sys/mounts/kv", api.SecretMountRequest{}, nil)
	const grants = `{"path": {"secret/kv/data/*": {"capabilities": ["update"]}}}`
	const narrowed = `{"path": {"secret/kv/data/*": {"capabilities": ["read"]}}}`
	policy := func(via int, doc string) {
		as(via, tc.root).must("PUT", "/v1/sys/policies/app", api.PolicyRequest{Policy: api.RawPolicy(doc)}, nil)
	}
	policy(leader, grants)
	token := func(via int) string {
		var tr api.TokenResponse
		as(via, tc.root).must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"app"}, TTL: "1h"}, &tr)
		return tr.ClientToken
	}
	body := map[string]any{"data": map[string]string{"v": "x"}}
	version := func(path string) int {
		var md api.SecretMetadata
		if status, _ := admin.do("GET", "/v1/secret/kv/metadata/"+path, nil, &md); status == http.StatusNotFound {
			return 0
		}
		return md.CurrentVersion
	}
	// changers alternates the node a change goes through: the leader and
	// the other follower.
	changers := []int{leader, other}

	// A token made through another node just before is found: a node
	// that does not know it yet asks the leader.
	for i := range 8 {
		tok := token(changers[i%2])
		if status, code := as(follower, tok).do("POST", fmt.Sprintf("/v1/secret/kv/data/new/%d", i), body, nil); status != http.StatusOK {
			t.Fatalf("round %d: a token made through node %d just before: %d %s", i, changers[i%2], status, code)
		}
	}
	// The version a write answers is the one it committed, through
	// whichever node, however far behind: each node's write follows the
	// last one acknowledged.
	writer := token(leader)
	for i := range 12 {
		var v api.SecretVersion
		as([]int{leader, follower, other}[i%3], writer).must("POST", "/v1/secret/kv/data/seq", body, &v)
		if v.Version != i+1 {
			t.Fatalf("write %d answered version %d", i+1, v.Version)
		}
	}
	// A token revoked through another node just before is refused.
	for i := range 8 {
		tok := token(leader)
		path := fmt.Sprintf("revoked/%d", i)
		as(follower, tok).must("POST", "/v1/secret/kv/data/"+path, body, nil)
		as(changers[i%2], tc.root).must("POST", "/v1/auth/token/revoke", api.TokenRequest{Token: tok}, nil)
		if status, code := as(follower, tok).do("POST", "/v1/secret/kv/data/"+path, body, nil); status != http.StatusForbidden || code != api.CodePermissionDenied {
			t.Fatalf("round %d: write with a token revoked through node %d: %d %s", i, changers[i%2], status, code)
		}
		if v := version(path); v != 1 {
			t.Fatalf("round %d: version %d after the refused write, want 1", i, v)
		}
	}
	// A policy narrowed through another node just before refuses the
	// write; widened again, it allows it.
	tok := token(leader)
	for i := range 8 {
		path := fmt.Sprintf("policy/%d", i)
		as(follower, tok).must("POST", "/v1/secret/kv/data/"+path, body, nil)
		policy(changers[i%2], narrowed)
		if status, code := as(follower, tok).do("POST", "/v1/secret/kv/data/"+path, body, nil); status != http.StatusForbidden || code != api.CodePermissionDenied {
			t.Fatalf("round %d: write after the policy was narrowed through node %d: %d %s", i, changers[i%2], status, code)
		}
		if v := version(path); v != 1 {
			t.Fatalf("round %d: version %d after the refused write, want 1", i, v)
		}
		policy(changers[(i+1)%2], grants)
		if status, code := as(follower, tok).do("POST", "/v1/secret/kv/data/"+path, body, nil); status != http.StatusOK {
			t.Fatalf("round %d: write after the policy was widened again: %d %s", i, status, code)
		}
	}
}
