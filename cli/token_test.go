package cli

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/auth"
)

func tokenInfo() auth.Token {
	return auth.Token{
		Accessor: "acc-1", Policies: []string{"app", "default"}, DisplayName: "ci",
		Parent: "acc-0", CreatedAt: testTime, ExpiresAt: testTime.Add(time.Hour),
		TTL: time.Hour, Renewable: true, Meta: map[string]string{"team": "infra"},
	}
}

func TestTokenCreate(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("POST /v1/auth/token/create", http.StatusOK, api.TokenResponse{ClientToken: "cst_new", Token: tokenInfo()})

	r := f.run("", "--token", "parent", "token", "create", "--policy", "app", "--policy", "default",
		"--ttl", "1h", "--max-ttl", "24h", "--display-name", "ci", "--num-uses", "3", "--meta", "team=infra").wantCode(t, 0)
	var req api.TokenCreateRequest
	f.last("POST /v1/auth/token/create").decode(t, &req)
	if strings.Join(req.Policies, ",") != "app,default" || req.TTL != "1h" || req.MaxTTL != "24h" ||
		req.DisplayName != "ci" || req.NumUses != 3 || req.Meta["team"] != "infra" || req.Renewable != nil {
		t.Fatalf("request %+v", req)
	}
	checkGolden(t, "token-create.txt", r.stdout)

	// --renewable is sent only when given.
	f.run("", "token", "create", "--renewable=false").wantCode(t, 0)
	req = api.TokenCreateRequest{}
	f.requests("POST /v1/auth/token/create")[1].decode(t, &req)
	if req.Renewable == nil || *req.Renewable {
		t.Fatalf("renewable %v", req.Renewable)
	}

	r = f.run("", "-o", "json", "token", "create").wantCode(t, 0)
	var resp api.TokenResponse
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil || resp.ClientToken != "cst_new" || resp.Accessor != "acc-1" {
		t.Fatalf("%v %+v", err, resp)
	}
}

func TestTokenLookupRenewRevoke(t *testing.T) {
	f := newFakeAPI(t)
	// A server that (wrongly) echoes a token must not get it printed.
	leaky := api.TokenResponse{ClientToken: "cst_secret", Token: tokenInfo()}
	for _, route := range []string{"GET /v1/auth/token/lookup-self", "POST /v1/auth/token/lookup", "POST /v1/auth/token/renew-self", "POST /v1/auth/token/renew"} {
		f.reply(route, http.StatusOK, leaky)
	}
	f.reply("POST /v1/auth/token/revoke", http.StatusNoContent, nil)
	f.reply("POST /v1/auth/token/revoke-self", http.StatusNoContent, nil)

	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		route string
		body  api.TokenRequest
	}{
		{name: "lookup self", args: []string{"token", "lookup"}, route: "GET /v1/auth/token/lookup-self"},
		{name: "lookup token", args: []string{"token", "lookup", "cst_secret"}, route: "POST /v1/auth/token/lookup", body: api.TokenRequest{Token: "cst_secret"}},
		{name: "lookup stdin", stdin: "cst_secret\n", args: []string{"token", "lookup", "-"}, route: "POST /v1/auth/token/lookup", body: api.TokenRequest{Token: "cst_secret"}},
		{name: "lookup accessor", args: []string{"token", "lookup", "--accessor", "acc-1"}, route: "POST /v1/auth/token/lookup", body: api.TokenRequest{Accessor: "acc-1"}},
		{name: "renew self", args: []string{"token", "renew", "--increment", "2h"}, route: "POST /v1/auth/token/renew-self"},
		{name: "renew accessor", args: []string{"token", "renew", "--accessor", "acc-1", "--increment", "2h"}, route: "POST /v1/auth/token/renew", body: api.TokenRequest{Accessor: "acc-1", Increment: "2h"}},
		{name: "revoke token", args: []string{"token", "revoke", "cst_secret"}, route: "POST /v1/auth/token/revoke", body: api.TokenRequest{Token: "cst_secret"}},
		{name: "revoke accessor", args: []string{"token", "revoke", "--accessor", "acc-1"}, route: "POST /v1/auth/token/revoke", body: api.TokenRequest{Accessor: "acc-1"}},
		{name: "revoke self", args: []string{"token", "revoke", "--self"}, route: "POST /v1/auth/token/revoke-self"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.requests(tc.route))
			r := f.run(tc.stdin, append([]string{"--token", "tok"}, tc.args...)...).wantCode(t, 0)
			rs := f.requests(tc.route)
			if len(rs) != before+1 {
				t.Fatalf("no request to %s", tc.route)
			}
			rec := rs[len(rs)-1]
			if tc.body != (api.TokenRequest{}) {
				var got api.TokenRequest
				rec.decode(t, &got)
				if got != tc.body {
					t.Fatalf("body %+v, want %+v", got, tc.body)
				}
			}
			if tc.name == "renew self" && string(rec.Body) != `{"increment":"2h"}` {
				t.Fatalf("renew-self body %s", rec.Body)
			}
			if strings.Contains(r.stdout+r.stderr, "cst_secret") {
				t.Fatalf("the token was printed:\n%s%s", r.stdout, r.stderr)
			}
		})
	}
	r := f.run("", "-o", "json", "token", "lookup").wantCode(t, 0)
	if strings.Contains(r.stdout, "cst_secret") || !strings.Contains(r.stdout, `"accessor": "acc-1"`) {
		t.Fatalf("json lookup:\n%s", r.stdout)
	}
}

func TestPolicy(t *testing.T) {
	f := newFakeAPI(t)
	doc := `{"path": {"kms/encrypt/app": {"capabilities": ["update"]}}}`
	f.reply("PUT /v1/sys/policies/app", http.StatusNoContent, nil)
	f.reply("GET /v1/sys/policies/app", http.StatusOK, api.PolicyResponse{Name: "app", Policy: json.RawMessage(doc)})
	f.reply("GET /v1/sys/policies", http.StatusOK, api.ListResponse{Keys: []string{"app", "default", "root"}})
	f.reply("DELETE /v1/sys/policies/app", http.StatusNoContent, nil)

	// From stdin and from a file, the document goes as the JSON string
	// api.RawPolicy accepts.
	f.run(doc, "policy", "write", "app", "-").wantCode(t, 0)
	file := filepath.Join(t.TempDir(), "app.json")
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	f.run("", "policy", "write", "app", file).wantCode(t, 0)
	for _, rec := range f.requests("PUT /v1/sys/policies/app") {
		var req struct{ Policy string }
		rec.decode(t, &req)
		var raw api.PolicyRequest
		if err := json.Unmarshal(rec.Body, &raw); err != nil || req.Policy != doc || string(raw.Policy) != doc {
			t.Fatalf("body %s: %v", rec.Body, err)
		}
	}
	f.run("", "policy", "write", "app", file+".missing").wantCode(t, 1)

	r := f.run("", "policy", "read", "app").wantCode(t, 0)
	var back any
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || !strings.Contains(r.stdout, "\n  \"path\"") {
		t.Fatalf("read prints the document, indented: %v\n%s", err, r.stdout)
	}
	r = f.run("", "policy", "list").wantCode(t, 0)
	if r.stdout != "app\ndefault\nroot\n" {
		t.Fatalf("list %q", r.stdout)
	}
	r = f.run("", "-o", "json", "policy", "list").wantCode(t, 0)
	var lr api.ListResponse
	if err := json.Unmarshal([]byte(r.stdout), &lr); err != nil || len(lr.Keys) != 3 {
		t.Fatalf("json list %v %s", err, r.stdout)
	}
	f.run("", "policy", "delete", "app").wantCode(t, 0)
	f.last("DELETE /v1/sys/policies/app")
}
