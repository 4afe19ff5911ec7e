package node

import (
	"bytes"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
)

// concretePath fills a chi pattern's parameters.
func concretePath(pattern string) string {
	return regexp.MustCompile(`\{[^}]+\}`).ReplaceAllString(pattern, "x1")
}

func TestEveryRouteButThePublicOnesNeedsAToken(t *testing.T) {
	tc := newTestCluster(t, 1)
	n := tc.nodes[0]
	srv, err := api.New(api.Config{Node: n})
	if err != nil {
		t.Fatal(err)
	}
	root := newClient(t, n, tc.caFile)
	root.token = tc.root
	var limited api.TokenResponse
	root.must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"}, &limited)
	selfService := map[string]bool{"/v1/auth/token/lookup-self": true, "/v1/auth/token/renew-self": true, "/v1/auth/token/revoke-self": true}

	public := 0
	for _, rt := range srv.Routes() {
		path := concretePath(rt.Pattern)
		if rt.Public {
			public++
			continue
		}
		t.Run(rt.Method+" "+rt.Pattern, func(t *testing.T) {
			anon := newClient(t, n, tc.caFile)
			if status, code := anon.do(rt.Method, path, nil, nil); status != http.StatusUnauthorized || code != api.CodeUnauthenticated {
				t.Fatalf("without a token: %d %s", status, code)
			}
			anon.token = "cst_forged-token-value"
			if status, code := anon.do(rt.Method, path, nil, nil); status != http.StatusForbidden || code != api.CodePermissionDenied {
				t.Fatalf("with a forged token: %d %s", status, code)
			}
			if selfService[rt.Pattern] {
				return
			}
			anon.token = limited.ClientToken
			if status, code := anon.do(rt.Method, path, nil, nil); status != http.StatusForbidden || code != api.CodePermissionDenied {
				t.Fatalf("with a token without the policy: %d %s", status, code)
			}
		})
	}
	if public == 0 || public > 20 {
		t.Fatalf("%d public routes", public)
	}
}

func TestBadInputGetsAStableErrorAndChangesNothing(t *testing.T) {
	tc := newTestCluster(t, 1)
	n := tc.nodes[0]
	c := newClient(t, n, tc.caFile)
	c.token = tc.root
	policies := func() []string {
		var l api.ListResponse
		c.must("GET", "/v1/sys/policies", nil, &l)
		return l.Keys
	}
	before := strings.Join(policies(), ",")
	cases := []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"malformed JSON", []byte(`{"policy": `), 400, api.CodeMalformedJSON},
		{"not an object", []byte(`[1,2]`), 400, api.CodeMalformedJSON},
		{"unknown field", []byte(`{"policy": "{}", "polcy": 1}`), 400, api.CodeUnknownField},
		{"two values", []byte(`{"policy": "{}"} {}`), 400, api.CodeMalformedJSON},
		{"wrong type", []byte(`{"policy": 5}`), 400, api.CodeInvalidArgument},
		{"over the size limit", append(append([]byte(`{"policy": "`), bytes.Repeat([]byte("a"), api.DefaultMaxBodyBytes+10)...), '"', '}'), 413, api.CodeBodyTooLarge},
		{"bad policy document", []byte(`{"policy": {"path": {"secret/*": {"capabilities": ["fly"]}}}}`), 400, api.CodeInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, code := c.do("PUT", "/v1/sys/policies/p1", tc.body, nil)
			if status != tc.status || code != tc.code {
				t.Fatalf("got %d %s, want %d %s", status, code, tc.status, tc.code)
			}
		})
	}
	if after := strings.Join(policies(), ","); after != before {
		t.Fatalf("rejected requests changed the policies: %s -> %s", before, after)
	}

	// Join tokens are spent once and expire.
	var jt api.JoinTokenResponse
	c.must("POST", "/v1/sys/join-token", api.JoinTokenRequest{TTL: "10m"}, &jt)
	good := api.JoinRequest{Token: jt.Token, NodeID: "nodex", ClusterAddr: "127.0.0.1:1"}
	if status, code := c.do("POST", "/v1/sys/cluster/join", good, nil); status != 400 || code != api.CodeInvalidArgument {
		t.Fatalf("join without CSRs: %d %s", status, code)
	}
	var short api.JoinTokenResponse
	c.must("POST", "/v1/sys/join-token", api.JoinTokenRequest{TTL: "1ms"}, &short)
	time.Sleep(5 * time.Millisecond)
	for name, tok := range map[string]string{"expired": short.Token, "unknown": "cjt_nope"} {
		req := validJoinRequest(t, tok)
		if status, code := c.do("POST", "/v1/sys/cluster/join", req, nil); status != 403 || code != api.CodePermissionDenied {
			t.Fatalf("%s join token: %d %s", name, status, code)
		}
	}
	first := validJoinRequest(t, jt.Token)
	first.ClusterAddr = freeAddr(t) // nothing listens: the voter is added in the background and never answers
	c.must("POST", "/v1/sys/cluster/join", first, nil)
	if status, code := c.do("POST", "/v1/sys/cluster/join", validJoinRequestFor(t, jt.Token, "nodey"), nil); status != 403 || code != api.CodePermissionDenied {
		t.Fatalf("reused join token: %d %s", status, code)
	}

	// A wrong unseal share is refused and leaves the node sealed.
	c.must("POST", "/v1/sys/seal", nil, nil)
	wrong := []string{tc.keys[0], tc.keys[1], strings.Repeat("ab", len(tc.keys[2])/2)}
	var status int
	var code string
	for _, k := range wrong {
		status, code = c.do("POST", "/v1/sys/unseal", api.UnsealRequest{Key: k}, nil)
	}
	if status != 403 || code != api.CodePermissionDenied {
		t.Fatalf("wrong share: %d %s", status, code)
	}
	if status, code := c.do("POST", "/v1/sys/unseal", api.UnsealRequest{Key: "not hex"}, nil); status != 400 || code != api.CodeInvalidArgument {
		t.Fatalf("malformed share: %d %s", status, code)
	}
	var st api.SealStatus
	c.must("GET", "/v1/sys/seal-status", nil, &st)
	if !st.Sealed {
		t.Fatal("a wrong share unsealed the node")
	}
	if status, code := c.do("GET", "/v1/sys/policies", nil, nil); status != 503 || code != api.CodeSealed {
		t.Fatalf("a sealed node answered: %d %s", status, code)
	}
	c.must("POST", "/v1/sys/unseal", api.UnsealRequest{Reset: true}, nil)
	tc.unseal(t, 0)
}

func validJoinRequest(t *testing.T, tok string) api.JoinRequest {
	t.Helper()
	return validJoinRequestFor(t, tok, "nodex")
}

func validJoinRequestFor(t *testing.T, tok, id string) api.JoinRequest {
	t.Helper()
	k1, _ := newKey()
	k2, _ := newKey()
	nodeCSR, err := csrPEM(k1, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	apiCSR, err := csrPEM(k2, id, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return api.JoinRequest{Token: tok, NodeID: id, ClusterAddr: "127.0.0.1:1", NodeCSR: nodeCSR, APICSR: apiCSR}
}
