package node

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/custos-pki/custos/api"
)

// A follower answers every request as of the moment it arrives: a change
// acknowledged through the leader (a revoked token, a narrowed policy, a
// new secret version) applies at once to the next request through a
// follower, and two writers with the same check-and-set version through
// different nodes do not both win. One linearizable read per request (the
// token's) is what guarantees it; these checks keep it so.
func TestFollowerSeesChangesAtOnce(t *testing.T) {
	tc := newTestCluster(t, 3)
	leader, follower := tc.leaderAndFollower(t)
	root := newClient(t, tc.nodes[leader], tc.caFile)
	root.token = tc.root
	const (
		full   = `{"path": {"kms/encrypt/app": {"capabilities": ["update"]}, "secret/kv/data/*": {"capabilities": ["read", "update"]}}}`
		noRead = `{"path": {"kms/encrypt/app": {"capabilities": ["update"]}, "secret/kv/data/*": {"capabilities": ["update"]}}}`
	)
	setPolicy := func(doc string) {
		root.must("PUT", "/v1/sys/policies/app", api.PolicyRequest{Policy: api.RawPolicy(doc)}, nil)
	}
	setPolicy(full)
	root.must("POST", "/v1/kms/keys/app", map[string]any{}, nil)
	root.must("POST", "/v1/sys/mounts/kv", api.SecretMountRequest{}, nil)
	newToken := func() (token, accessor string) {
		var tr api.TokenResponse
		root.must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"app"}, TTL: "1h"}, &tr)
		return tr.ClientToken, tr.Accessor
	}
	viaFollower := func(token string) *client {
		c := newClient(t, tc.nodes[follower], tc.caFile)
		c.token = token
		return c
	}
	viaLeader := func(token string) *client {
		c := newClient(t, tc.nodes[leader], tc.caFile)
		c.token = token
		return c
	}
	encrypt := map[string]string{"plaintext": b64("hello")}

	{ // revoked token
		for range 5 {
			tok, acc := newToken()
			f := viaFollower(tok)
			f.must("POST", "/v1/kms/encrypt/app", encrypt, nil)
			root.must("POST", "/v1/auth/token/revoke", api.TokenRequest{Accessor: acc}, nil)
			if status, code := f.do("POST", "/v1/kms/encrypt/app", encrypt, nil); status != http.StatusForbidden || code != api.CodePermissionDenied {
				t.Fatalf("encrypt with a token revoked through the leader, via a follower: %d %s", status, code)
			}
		}
	}

	{ // policy change
		tok, _ := newToken()
		f := viaFollower(tok)
		viaLeader(tok).must("PUT", "/v1/secret/kv/data/p", api.SecretWriteRequest{Data: []byte(`{"a":1}`)}, nil)
		for range 5 {
			f.must("GET", "/v1/secret/kv/data/p", nil, nil)
			setPolicy(noRead)
			if status, code := f.do("GET", "/v1/secret/kv/data/p", nil, nil); status != http.StatusForbidden || code != api.CodePermissionDenied {
				t.Fatalf("read via a follower after the policy lost read: %d %s", status, code)
			}
			setPolicy(full)
		}
	}

	{ // secret versions
		tok, _ := newToken()
		l, f := viaLeader(tok), viaFollower(tok)
		for i := 1; i <= 10; i++ {
			var v api.SecretVersion
			l.must("PUT", "/v1/secret/kv/data/s", api.SecretWriteRequest{Data: fmtJSON(i)}, &v)
			var got api.SecretReadResponse
			f.must("GET", "/v1/secret/kv/data/s", nil, &got)
			if got.Metadata.Version != v.Version || string(got.Data) != string(fmtJSON(i)) {
				t.Fatalf("via a follower after version %d was written: version %d, %s", v.Version, got.Metadata.Version, got.Data)
			}
		}
	}

	{ // check-and-set across nodes
		tok, _ := newToken()
		l, f := viaLeader(tok), viaFollower(tok)
		for i := range 5 {
			cur := i
			l.must("PUT", "/v1/secret/kv/data/c", api.SecretWriteRequest{Data: fmtJSON(i), Options: api.SecretWriteOptions{CAS: &cur}}, nil)
			if status, code := f.do("PUT", "/v1/secret/kv/data/c", api.SecretWriteRequest{Data: fmtJSON(-i), Options: api.SecretWriteOptions{CAS: &cur}}, nil); status != http.StatusConflict {
				t.Fatalf("second write with cas %d, via a follower: %d %s", cur, status, code)
			}
		}
	}
}

func fmtJSON(i int) []byte { return []byte(`{"i":` + strconv.Itoa(i) + `}`) }
