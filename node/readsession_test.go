package node

import (
	"fmt"
	"slices"
	"testing"

	"github.com/custos-pki/custos/api"
)

// A request through a follower takes one read index for all its
// linearizable reads (a listing: the token, then the list; a KV read: the
// token, then the mount and the secret): its first read
// asks the leader, the others read the state that read caught up to. It
// still sees a write acknowledged through another node before it began.
func TestRequestThroughAFollowerTakesOneReadIndex(t *testing.T) {
	tc := newTestCluster(t, 3)
	leader, follower := tc.leaderAndFollower(t)
	root := newClient(t, tc.nodes[leader], tc.caFile)
	root.token = tc.root
	root.must("PUT", "/v1/sys/policies/app", api.PolicyRequest{Policy: api.RawPolicy(
		`{"path": {"kms/keys": {"capabilities": ["list"]}, "secret/kv/data/*": {"capabilities": ["read"]}}}`)}, nil)
	root.must("POST", "/v1/sys/mounts/kv", api.SecretMountRequest{}, nil)
	var tr api.TokenResponse
	root.must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"app"}, TTL: "1h"}, &tr)

	f := tc.nodes[follower]
	c := newClient(t, f, tc.caFile)
	c.token = tr.ClientToken
	const requests = 20
	for _, w := range []struct {
		name string
		do   func(i int)
	}{
		{"kms-key-list", func(i int) {
			// Created through the leader right before: the follower's
			// listing must show it.
			name := fmt.Sprintf("k%02d", i)
			root.must("POST", "/v1/kms/keys/"+name, map[string]any{}, nil)
			var out struct {
				Keys []string `json:"keys"`
			}
			c.must("GET", "/v1/kms/keys", nil, &out)
			if !slices.Contains(out.Keys, name) {
				t.Fatalf("listing through the follower: %v; want %s in it", out.Keys, name)
			}
		}},
		{"kv-get", func(i int) {
			root.must("PUT", fmt.Sprintf("/v1/secret/kv/data/s%d", i), api.SecretWriteRequest{Data: fmt.Appendf(nil, `{"v":%d}`, i)}, nil)
			var out struct {
				Data map[string]int `json:"data"`
			}
			c.must("GET", fmt.Sprintf("/v1/secret/kv/data/s%d", i), nil, &out)
			if v, ok := out.Data["v"]; !ok || v != i {
				t.Fatalf("read through the follower: %+v; want v=%d", out, i)
			}
		}},
	} {
		before := f.store.ReadCounts()
		for i := range requests {
			w.do(i)
		}
		after := f.store.ReadCounts()
		if f.store.IsLeader() {
			t.Skip("the follower became the leader")
		}
		sent, shared := after.ReadIndexRequests-before.ReadIndexRequests, after.SessionReads-before.SessionReads
		t.Logf("%s: %d requests through a follower sent %d read-index requests; %d reads shared one", w.name, requests, sent, shared)
		// A background read of the node may add a request now and then.
		if sent < requests || sent > requests+requests/4 || shared < requests {
			t.Errorf("%s: %d requests sent %d read-index requests and %d reads shared one; want about one each, and at least %d shared",
				w.name, requests, sent, shared, requests)
		}
	}
}
