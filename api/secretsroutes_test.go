package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/raftstore"
	"github.com/custos-pki/custos/secrets"
)

// secFixture is a test stack with a secret store.
type secFixture struct{ *testStack }

func newSecFixture(t *testing.T) *secFixture {
	t.Helper()
	return &secFixture{newTestStack(t, stackOptions{withSecrets: true})}
}

// errCode is the error code of an API error document, or "".
func errCode(raw []byte) string {
	var eb struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(raw, &eb)
	return eb.Error.Code
}

// ok calls and fails the test unless the status is 200 or 204.
func (f *secFixture) ok(t *testing.T, method, path string, body, out any) {
	t.Helper()
	if status, raw := f.call(t, f.root, method, path, body, out); status != 200 && status != 204 {
		t.Fatalf("%s %s: %d %s", method, path, status, errCode(raw))
	}
}

func (f *secFixture) want(t *testing.T, tok, method, path string, body any, status int, code string) {
	t.Helper()
	got, raw := f.call(t, tok, method, path, body, nil)
	if gotCode := errCode(raw); got != status || gotCode != code {
		t.Fatalf("%s %s: got %d %q, want %d %q", method, path, got, gotCode, status, code)
	}
}

func write(data string, cas ...int) string {
	if len(cas) > 0 {
		return fmt.Sprintf(`{"data":%s,"options":{"cas":%d}}`, data, cas[0])
	}
	return `{"data":` + data + `}`
}

func TestSecretRoutes(t *testing.T) {
	f := newSecFixture(t)
	var m SecretMount
	f.ok(t, "POST", "/v1/sys/mounts/kv", SecretMountRequest{MaxVersions: new(5)}, &m)
	if m.Name != "kv" || m.MaxVersions != 5 || m.DeleteVersionAfter != "0s" {
		t.Fatalf("mount: %+v", m)
	}
	f.want(t, f.root, "POST", "/v1/sys/mounts/kv", nil, 409, CodeConflict)
	f.want(t, f.root, "POST", "/v1/sys/mounts/_kv", nil, 400, CodeInvalidArgument)
	f.ok(t, "POST", "/v1/sys/mounts/kv/tune", `{"cas_required":false,"delete_version_after":"0s"}`, &m)
	var ml SecretMountList
	f.ok(t, "GET", "/v1/sys/mounts", nil, &ml)
	if len(ml.Mounts) != 1 || ml.Mounts[0].Name != "kv" {
		t.Fatalf("mounts: %+v", ml)
	}
	f.ok(t, "GET", "/v1/sys/mounts/kv", nil, &m)

	// Write, read, check-and-set, versions.
	var v SecretVersion
	f.ok(t, "PUT", "/v1/secret/kv/data/app/db", write(`{"password":"hunter2"}`), &v)
	if v.Version != 1 || v.DeletionTime != "" {
		t.Fatalf("version: %+v", v)
	}
	f.ok(t, "POST", "/v1/secret/kv/data/app/db", write(`{"password":"hunter3"}`, 1), &v)
	f.want(t, f.root, "PUT", "/v1/secret/kv/data/app/db", write(`{"password":"x"}`, 1), 409, CodeConflict)
	f.want(t, f.root, "PUT", "/v1/secret/kv/data/app/db", write(`{"password":"x"}`, 0), 409, CodeConflict)
	var sec SecretReadResponse
	f.ok(t, "GET", "/v1/secret/kv/data/app/db", nil, &sec)
	if string(sec.Data) != `{"password":"hunter3"}` || sec.Metadata.Version != 2 {
		t.Fatalf("read: %s %+v", sec.Data, sec.Metadata)
	}
	f.ok(t, "GET", "/v1/secret/kv/data/app/db?version=1", nil, &sec)
	if string(sec.Data) != `{"password":"hunter2"}` {
		t.Fatalf("version 1: %s", sec.Data)
	}
	f.ok(t, "PATCH", "/v1/secret/kv/data/app/db", write(`{"user":"app"}`), &v)
	f.ok(t, "GET", "/v1/secret/kv/data/app/db", nil, &sec)
	if string(sec.Data) != `{"password":"hunter3","user":"app"}` || sec.Metadata.Version != 3 {
		t.Fatalf("patched: %s", sec.Data)
	}

	// Delete, undelete, destroy.
	f.ok(t, "DELETE", "/v1/secret/kv/data/app/db", nil, nil)
	f.want(t, f.root, "GET", "/v1/secret/kv/data/app/db", nil, 404, CodeNotFound)
	f.ok(t, "POST", "/v1/secret/kv/undelete/app/db", SecretVersionsRequest{Versions: []int{3}}, nil)
	f.ok(t, "GET", "/v1/secret/kv/data/app/db", nil, &sec)
	f.ok(t, "POST", "/v1/secret/kv/delete/app/db", SecretVersionsRequest{Versions: []int{1}}, nil)
	f.ok(t, "POST", "/v1/secret/kv/destroy/app/db", SecretVersionsRequest{Versions: []int{2}}, nil)
	f.want(t, f.root, "GET", "/v1/secret/kv/data/app/db?version=1", nil, 404, CodeNotFound)
	f.want(t, f.root, "GET", "/v1/secret/kv/data/app/db?version=2", nil, 404, CodeNotFound)
	f.want(t, f.root, "POST", "/v1/secret/kv/destroy/app/db", `{}`, 400, CodeInvalidArgument)

	// Metadata.
	f.ok(t, "PUT", "/v1/secret/kv/metadata/app/db", `{"custom_metadata":{"owner":"team-a"},"max_versions":4}`, nil)
	var md SecretMetadata
	f.ok(t, "GET", "/v1/secret/kv/metadata/app/db", nil, &md)
	if md.CurrentVersion != 3 || md.OldestVersion != 1 || md.MaxVersions != 4 || md.CustomMetadata["owner"] != "team-a" ||
		md.Versions["1"].DeletionTime == "" || !md.Versions["2"].Destroyed || len(md.Versions) != 3 {
		t.Fatalf("metadata: %+v", md)
	}

	// Listing, filtering, paging.
	for _, p := range []string{"app/web", "app/sub/one", "top"} {
		f.ok(t, "PUT", "/v1/secret/kv/data/"+p, write(`{"k":"v"}`), nil)
	}
	list := func(q string) string {
		var l SecretListResponse
		f.ok(t, "GET", "/v1/secret/kv/metadata/"+q, nil, &l)
		return strings.Join(l.Keys, " ") + "|" + l.Next
	}
	for q, want := range map[string]string{
		"?list=true":                   "app/ top|",
		"app/?list=true":               "db sub/ web|",
		"app?list=true&recursive=true": "db sub/one web|",
		"?list=true&recursive=true&filter=owner=team-a": "app/db|",
		"?list=true&recursive=true&limit=2":             "app/db app/sub/one|app/sub/one",
		"?list=true&recursive=true&after=app/sub/one":   "app/web top|",
		"nothing/?list=true":                            "|",
	} {
		if got := list(q); got != want {
			t.Errorf("list %s: got %q, want %q", q, got, want)
		}
	}

	// Read many, move.
	var many SecretReadManyResponse
	f.ok(t, "POST", "/v1/secret/kv/read-many", SecretReadManyRequest{Paths: []string{"top", "nope", "a/../b", "app/web"}}, &many)
	if r := many.Results; len(r) != 4 || string(r[0].Data) != `{"k":"v"}` || r[1].Error.Code != CodeNotFound ||
		r[2].Error.Code != CodeInvalidArgument || r[3].Metadata.Version != 1 {
		t.Fatalf("read-many: %+v", many)
	}
	f.ok(t, "POST", "/v1/secret/kv/move", SecretMoveRequest{From: "app/db", To: "moved/db"}, nil)
	f.ok(t, "GET", "/v1/secret/kv/data/moved/db", nil, &sec)
	if string(sec.Data) != `{"password":"hunter3","user":"app"}` {
		t.Fatalf("moved: %s", sec.Data)
	}
	f.want(t, f.root, "GET", "/v1/secret/kv/metadata/app/db", nil, 404, CodeNotFound)
	f.want(t, f.root, "POST", "/v1/secret/kv/move", SecretMoveRequest{From: "top", To: "moved/db"}, 409, CodeConflict)

	// Delete everything.
	f.ok(t, "DELETE", "/v1/secret/kv/metadata/top", nil, nil)
	f.want(t, f.root, "GET", "/v1/secret/kv/data/top", nil, 404, CodeNotFound)
	f.want(t, f.root, "DELETE", "/v1/sys/mounts/kv", nil, 409, CodeConflict)
	f.ok(t, "DELETE", "/v1/sys/mounts/kv?force=true", nil, nil)
	f.want(t, f.root, "GET", "/v1/sys/mounts/kv", nil, 404, CodeNotFound)

	// The audit log holds no value in the clear.
	logged, err := os.ReadFile(f.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"hunter2", "hunter3", "team-a"} {
		if bytes.Contains(logged, []byte(s)) {
			t.Errorf("audit log holds %q", s)
		}
	}
	if !bytes.Contains(logged, []byte("/v1/secret/kv/data/app/db")) {
		t.Error("audit log misses the requests")
	}
}

// Policies apply per path, also inside read-many and move; listing needs
// list alone.
func TestSecretRoutesPolicies(t *testing.T) {
	f := newSecFixture(t)
	ctx := context.Background()
	f.ok(t, "POST", "/v1/sys/mounts/kv", nil, nil)
	for _, p := range []string{"app/a", "app/b", "other/c"} {
		f.ok(t, "PUT", "/v1/secret/kv/data/"+p, write(`{"k":"v"}`), nil)
	}
	doc := `{"path": {
		"secret/kv/data/app/*": {"capabilities": ["read", "update"]},
		"secret/kv/metadata/*": {"capabilities": ["list"]},
		"secret/kv/metadata/app/*": {"capabilities": ["delete"]},
		"secret/kv/read-many": {"capabilities": ["read"]},
		"secret/kv/move": {"capabilities": ["update"]}}}`
	if err := f.auth.WritePolicy(ctx, "app", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	tok, _, err := f.auth.CreateToken(ctx, f.root, auth.TokenRequest{Policies: []string{"app"}})
	if err != nil {
		t.Fatal(err)
	}
	if s, raw := f.call(t, tok, "GET", "/v1/secret/kv/data/app/a", nil, nil); s != 200 {
		t.Fatalf("read allowed path: %d %s", s, errCode(raw))
	}
	f.want(t, tok, "GET", "/v1/secret/kv/data/other/c", nil, 403, CodePermissionDenied)
	f.want(t, tok, "PUT", "/v1/secret/kv/data/other/c", write(`{}`), 403, CodePermissionDenied)
	f.want(t, tok, "DELETE", "/v1/secret/kv/data/app/a", nil, 403, CodePermissionDenied)
	f.want(t, tok, "GET", "/v1/secret/kv/metadata/app/a", nil, 403, CodePermissionDenied)
	f.want(t, tok, "POST", "/v1/sys/mounts/x", nil, 403, CodePermissionDenied)
	var l SecretListResponse
	if s, raw := f.call(t, tok, "GET", "/v1/secret/kv/metadata/?list=true", nil, &l); s != 200 || len(l.Keys) != 2 {
		t.Fatalf("list with list only: %d %s %v", s, errCode(raw), l.Keys)
	}
	var many SecretReadManyResponse
	if s, _ := f.call(t, tok, "POST", "/v1/secret/kv/read-many", SecretReadManyRequest{Paths: []string{"app/a", "other/c"}}, &many); s != 200 ||
		many.Results[0].Error != nil || many.Results[1].Error == nil || many.Results[1].Error.Code != CodePermissionDenied || many.Results[1].Data != nil {
		t.Fatalf("read-many: %d %+v", s, many)
	}
	f.want(t, tok, "POST", "/v1/secret/kv/move", SecretMoveRequest{From: "other/c", To: "app/c"}, 403, CodePermissionDenied)
	f.want(t, tok, "POST", "/v1/secret/kv/move", SecretMoveRequest{From: "app/a", To: "other/a"}, 403, CodePermissionDenied)
	if s, raw := f.call(t, tok, "POST", "/v1/secret/kv/move", SecretMoveRequest{From: "app/a", To: "app/z"}, nil); s != 204 {
		t.Fatalf("move within the policy: %d %s", s, errCode(raw))
	}
}

// Bad input gets a 4xx with a stable code, and changes nothing stored.
func TestSecretRoutesBadInput(t *testing.T) {
	f := newSecFixture(t)
	f.ok(t, "POST", "/v1/sys/mounts/kv", nil, nil)
	f.ok(t, "PUT", "/v1/secret/kv/data/s", write(`{"v":1}`), nil)
	f.ok(t, "PUT", "/v1/secret/kv/data/s", write(`{"v":2}`), nil)
	f.ok(t, "POST", "/v1/secret/kv/destroy/s", `{"versions":[1]}`, nil)
	before := secDump(t, f.store)
	big := `{"a":"` + strings.Repeat("x", secrets.MaxValueSize) + `"}`
	cases := []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"PUT", "/v1/secret/kv/data/a/../s", write(`{}`), 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/a/%2e%2e/s", write(`{}`), 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/a//s", write(`{}`), 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/s/", write(`{}`), 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/a%00b", write(`{}`), 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/a%0Ab", write(`{}`), 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/" + strings.Repeat("a", 513), write(`{}`), 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/s", write(`[1,2]`), 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/s", write(`"text"`), 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/s", `{"options":{}}`, 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/s", `[]`, 400, CodeMalformedJSON},
		{"PUT", "/v1/secret/kv/data/s", `{"data":{}, "extra":1}`, 400, CodeUnknownField},
		{"PUT", "/v1/secret/kv/data/s", `{"data":{},"options":{"cas":"1"}}`, 400, CodeMalformedJSON},
		{"PUT", "/v1/secret/kv/data/s", write(big), 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/data/s", write(`{"a":"` + strings.Repeat("x", DefaultMaxBodyBytes) + `"}`), 413, CodeBodyTooLarge},
		{"PUT", "/v1/secret/kv/data/s", write(`{}`, 1), 409, CodeConflict},
		{"PATCH", "/v1/secret/kv/data/s", write(`{}`, 0), 409, CodeConflict},
		{"PATCH", "/v1/secret/kv/data/nope", write(`{}`), 404, CodeNotFound},
		{"GET", "/v1/secret/kv/data/s?version=1", "", 404, CodeNotFound},
		{"GET", "/v1/secret/kv/data/s?version=x", "", 400, CodeInvalidArgument},
		{"POST", "/v1/secret/kv/delete/s", `{"versions":[7]}`, 404, CodeNotFound},
		{"POST", "/v1/secret/kv/undelete/s", `{"versions":[-1]}`, 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/metadata/s", `{"max_versions":100000}`, 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/kv/metadata/s", `{"delete_version_after":"soon"}`, 400, CodeInvalidArgument},
		{"GET", "/v1/secret/kv/metadata/../x?list=true", "", 400, CodeInvalidArgument},
		{"GET", "/v1/secret/kv/metadata/?list=true&limit=0", "", 400, CodeInvalidArgument},
		{"GET", "/v1/secret/kv/metadata/?list=true&filter=novalue", "", 400, CodeInvalidArgument},
		{"POST", "/v1/secret/kv/read-many", `{"paths":[]}`, 400, CodeInvalidArgument},
		{"POST", "/v1/secret/kv/move", `{"from":"s","to":"../t"}`, 400, CodeInvalidArgument},
		{"POST", "/v1/secret/kv/move", `{"from":"s","to":"s"}`, 400, CodeInvalidArgument},
		{"PUT", "/v1/secret/nope/data/s", write(`{}`), 404, CodeNotFound},
		{"DELETE", "/v1/sys/mounts/kv?force=maybe", "", 400, CodeInvalidArgument},
		{"POST", "/v1/sys/mounts/kv2", `{"max_versions":-1}`, 400, CodeInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path[:min(len(tc.path), 60)], func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			f.want(t, f.root, tc.method, tc.path, body, tc.status, tc.code)
		})
	}
	if after := secDump(t, f.store); after != before {
		t.Fatal("refused requests changed the stored secrets")
	}
}

// secDump is every key and stored value of the secrets tables.
func secDump(t *testing.T, raw *raftstore.Store) string {
	t.Helper()
	var sb strings.Builder
	for _, table := range []string{"secrets.mounts", "secrets.live", "secrets.meta", "secrets.data"} {
		page, err := raw.List(context.Background(), table, raftstore.ListOptions{})
		if err != nil || page.Next != nil {
			t.Fatal(err, page.Next)
		}
		for _, kv := range page.Items {
			fmt.Fprintf(&sb, "%s %q %x\n", table, kv.Key, kv.Value)
		}
	}
	return sb.String()
}

// FuzzSecretWriteBody: whatever the body, the decoder answers a 4xx API
// error or hands on a JSON object within the size limit.
func FuzzSecretWriteBody(f *testing.F) {
	for _, s := range []string{write(`{"a":1}`), write(`{}`, 0), `{}`, `{"data":[]}`, `{"data":null}`, `{"data":{}} x`, `{"data":"x"}`,
		`{"options":{"cas":-1},"data":{"a":{"b":[1,2,null]}}}`, `{"data":{"a":1},"data":{"b":2}}`, "{\"data\":{\"\xff\":1}}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("PUT", "/v1/secret/kv/data/s", bytes.NewReader(body))
		var req SecretWriteRequest
		err := decode(r, &req)
		if err == nil {
			_, err = decodeSecretWrite(&req)
		}
		if err != nil {
			if e := toError(err); e.Status < 400 || e.Status > 499 {
				t.Fatalf("error %v maps to %d", err, e.Status)
			}
			return
		}
		var m map[string]any
		if len(req.Data) > secrets.MaxValueSize || json.Unmarshal(req.Data, &m) != nil || m == nil {
			t.Fatalf("accepted %q as %q", body, req.Data)
		}
	})
}
