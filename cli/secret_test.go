package cli

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
)

// secretValue is in the data of the tests; it must never be printed except
// by get and read-many.
const secretValue = "hunter2"

func TestSecretMounts(t *testing.T) {
	f := newFakeAPI(t)
	mount := api.SecretMount{Name: "kv", CreatedTime: testTime, MaxVersions: 5, DeleteVersionAfter: "0s", CASRequired: true}
	f.reply("POST /v1/sys/mounts/kv", http.StatusOK, mount)
	f.reply("GET /v1/sys/mounts", http.StatusOK, api.SecretMountList{Mounts: []api.SecretMount{
		mount, {Name: "old", CreatedTime: testTime, MaxVersions: 10, DeleteVersionAfter: "720h0m0s", Deleting: true},
	}})
	f.reply("DELETE /v1/sys/mounts/kv", http.StatusNoContent, nil)

	r := f.run("", "secret", "mount", "create", "kv", "--max-versions", "5", "--cas-required").wantCode(t, 0)
	var req api.SecretMountRequest
	f.last("POST /v1/sys/mounts/kv").decode(t, &req)
	if !reflect.DeepEqual(req, api.SecretMountRequest{MaxVersions: new(5), CASRequired: new(true)}) {
		t.Fatalf("create %+v", req)
	}
	want := "Name                  kv\nCreated               2030-01-02T03:04:05Z\nMax versions          5\nCAS required          true\nDelete version after  never\n"
	if r.stdout != want {
		t.Fatalf("create:\n%s", r.stdout)
	}
	f.run("", "secret", "mount", "create", "kv", "--delete-version-after", "720h").wantCode(t, 0)
	if b := string(f.requests("POST /v1/sys/mounts/kv")[1].Body); b != `{"max_versions":null,"delete_version_after":"720h","cas_required":null}` {
		t.Fatalf("only the flags given: %s", b)
	}

	r = f.run("", "secret", "mount", "list").wantCode(t, 0)
	checkGolden(t, "secret-mounts.txt", r.stdout)
	r = f.run("", "-o", "json", "secret", "mount", "list").wantCode(t, 0)
	var ml api.SecretMountList
	if err := json.Unmarshal([]byte(r.stdout), &ml); err != nil || len(ml.Mounts) != 2 || !ml.Mounts[1].Deleting {
		t.Fatalf("json %v: %s", err, r.stdout)
	}

	if r = f.run("", "secret", "mount", "delete", "kv").wantCode(t, 0); r.stdout != "Deleted mount kv\n" {
		t.Fatalf("delete %q", r.stdout)
	}
	f.run("", "secret", "mount", "delete", "kv", "--force").wantCode(t, 0)
	if rs := f.requests("DELETE /v1/sys/mounts/kv"); rs[0].Query != "" || rs[1].Query != "force=true" {
		t.Fatalf("queries %q %q", rs[0].Query, rs[1].Query)
	}
	if r = f.run("", "-o", "json", "secret", "mount", "delete", "kv").wantCode(t, 0); r.stdout != "" {
		t.Fatalf("json delete %q", r.stdout)
	}
}

func TestSecretPutPatch(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("PUT /v1/secret/kv/data/app/db", http.StatusOK, api.SecretVersion{Version: 3, CreatedTime: testTime})
	f.reply("PATCH /v1/secret/kv/data/app/db", http.StatusOK, api.SecretVersion{Version: 4, CreatedTime: testTime})
	pwFile := writeTemp(t, "pw.txt", secretValue+"\n")
	doc := writeTemp(t, "db.json", "{\n  \"user\": \"app\",\n  \"port\": 5432,\n  \"tags\": [\"a\", \"<b>\"]\n}\n")

	// encoding/json escapes <, > and & in the body; the server reads the
	// same strings back.
	for _, tc := range []struct {
		name, cmd, stdin string
		args             []string
		data, options    string
	}{
		{name: "pairs", cmd: "put", args: []string{"user=app", "password=" + secretValue, "dsn=a=b&c<d"},
			data: `{"dsn":"a=b\u0026c\u003cd","password":"hunter2","user":"app"}`, options: `{"cas":null}`},
		{name: "value from a file", cmd: "put", args: []string{"password=@" + pwFile, "empty="},
			data: `{"empty":"","password":"hunter2\n"}`, options: `{"cas":null}`},
		{name: "json file", cmd: "put", args: []string{"@" + doc, "--cas", "0"},
			data: `{"user":"app","port":5432,"tags":["a","\u003cb\u003e"]}`, options: `{"cas":0}`},
		{name: "stdin", cmd: "put", stdin: `{"password": "hunter2"}`, args: []string{"-", "--cas", "2"},
			data: `{"password":"hunter2"}`, options: `{"cas":2}`},
		{name: "patch pairs", cmd: "patch", args: []string{"password=" + secretValue},
			data: `{"password":"hunter2"}`, options: `{"cas":null}`},
		{name: "patch removes with null", cmd: "patch", stdin: `{"old": null}`, args: []string{"-"},
			data: `{"old":null}`, options: `{"cas":null}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.run(tc.stdin, append([]string{"secret", tc.cmd, "kv/app/db"}, tc.args...)...).wantCode(t, 0)
			method, version := "PUT", "3"
			if tc.cmd == "patch" {
				method, version = "PATCH", "4"
			}
			rs := f.requests(method + " /v1/secret/kv/data/app/db")
			var body struct{ Data, Options json.RawMessage }
			rs[len(rs)-1].decode(t, &body)
			if string(body.Data) != tc.data || string(body.Options) != tc.options {
				t.Fatalf("data %s, options %s", body.Data, body.Options)
			}
			verb := map[string]string{"put": "Wrote", "patch": "Patched"}[tc.cmd]
			if r.stdout != verb+" kv/app/db version "+version+"\n" || r.stderr != "" {
				t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
			}
		})
	}
	r := f.run("", "-o", "json", "secret", "put", "kv/app/db", "password="+secretValue).wantCode(t, 0)
	var v api.SecretVersion
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Version != 3 || strings.Contains(r.stdout, secretValue) {
		t.Fatalf("json %v: %s", err, r.stdout)
	}

	// Bad data changes nothing and its errors do not quote it.
	n := len(f.requests(""))
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
		err   string
	}{
		{args: []string{secretValue}, code: 2, err: "data argument 1: use KEY=VALUE"},
		{args: []string{"a=1", "=" + secretValue}, code: 2, err: "data argument 2"},
		{args: []string{"a=1", "a=" + secretValue}, code: 2, err: `key "a" is given twice`},
		{args: []string{"a=1", "-"}, code: 2, err: "@FILE.json and - stand alone"},
		{stdin: `["hunter2"]`, args: []string{"-"}, code: 1, err: "stdin: the data must be a JSON object"},
		{stdin: `{"a": hunter2}`, args: []string{"-"}, code: 1, err: "stdin: malformed JSON at byte"},
		{stdin: `null`, args: []string{"-"}, code: 1, err: "the data must be a JSON object"},
		{args: []string{"k=@" + writeTemp(t, "bin", "\xff\xfe"+secretValue)}, code: 1, err: "is not UTF-8 text"},
		{args: []string{"@/nonexistent/db.json"}, code: 1, err: "no such file"},
	} {
		r := f.run(tc.stdin, append([]string{"secret", "put", "kv/app/db"}, tc.args...)...).wantCode(t, tc.code)
		if !strings.Contains(r.stderr, tc.err) || strings.Contains(r.stderr, secretValue) {
			t.Errorf("%q: stderr %q", tc.args, r.stderr)
		}
	}
	if got := len(f.requests("")); got != n {
		t.Fatalf("bad data sent %d requests", got-n)
	}
}

func secretAnswer() api.SecretReadResponse {
	return api.SecretReadResponse{
		Data: json.RawMessage(`{"password":"hunter2","port":5432,"note":"two\nlines","user":"app"}`),
		Metadata: api.SecretVersionMeta{
			SecretVersion:  api.SecretVersion{Version: 3, CreatedTime: testTime},
			CustomMetadata: map[string]string{"owner": "team-a"},
		},
	}
}

func TestSecretGet(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("GET /v1/secret/kv/data/app/db", http.StatusOK, secretAnswer())

	r := f.run("", "secret", "get", "kv/app/db").wantCode(t, 0)
	checkGolden(t, "secret-get.txt", r.stdout)
	if q := f.last("GET /v1/secret/kv/data/app/db").Query; q != "" {
		t.Fatalf("query %q", q)
	}
	r = f.run("", "-o", "json", "secret", "get", "kv/app/db", "--version", "2").wantCode(t, 0)
	var back api.SecretReadResponse
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || back.Metadata.Version != 3 {
		t.Fatalf("json %v: %s", err, r.stdout)
	}
	if rs := f.requests("GET /v1/secret/kv/data/app/db"); rs[1].Query != "version=2" {
		t.Fatalf("query %q", rs[1].Query)
	}

	// --field: the value exactly, for pipes; JSON for non-strings.
	for field, want := range map[string]string{"password": "hunter2", "note": "two\nlines", "port": "5432"} {
		if r = f.run("", "secret", "get", "kv/app/db", "--field", field).wantCode(t, 0); r.stdout != want {
			t.Errorf("--field %s: %q", field, r.stdout)
		}
	}
	if r = f.run("", "-o", "json", "secret", "get", "kv/app/db", "--field", "password").wantCode(t, 0); r.stdout != "\"hunter2\"\n" {
		t.Fatalf("json field %q", r.stdout)
	}
	r = f.run("", "secret", "get", "kv/app/db", "--field", "nope").wantCode(t, 1)
	if r.stderr != "Error: kv/app/db version 3 has no field \"nope\"\n" {
		t.Fatalf("stderr %q", r.stderr)
	}

	f.reply("GET /v1/secret/kv/data/app/gone", http.StatusNotFound, apiErrorDoc(api.CodeNotFound, `secrets: not found: "app/gone"`))
	r = f.run("", "secret", "get", "kv/app/gone").wantCode(t, 1)
	if !strings.Contains(r.stderr, "(code not_found, request req-1)") {
		t.Fatalf("stderr %q", r.stderr)
	}

	// Each segment is escaped: a space, a percent sign, a question mark.
	f.reply("GET /v1/secret/kv/data/a b/c%d?e", http.StatusOK, secretAnswer())
	f.run("", "secret", "get", "kv/a b/c%d?e").wantCode(t, 0)
}

func TestSecretList(t *testing.T) {
	f := newFakeAPI(t)
	pages := map[string]api.SecretListResponse{
		"":      {Keys: []string{"db", "sub/"}, Next: "sub/"},
		"sub/":  {Keys: []string{}, Next: "sub/x"}, // a page may be empty and still have a next
		"sub/x": {Keys: []string{"web"}},
	}
	f.on("GET /v1/secret/kv/metadata/app/", func(r recorded) (int, any) {
		var after string
		for kv := range strings.SplitSeq(r.Query, "&") {
			if v, ok := strings.CutPrefix(kv, "after="); ok {
				after = strings.ReplaceAll(v, "%2F", "/")
			}
		}
		return http.StatusOK, pages[after]
	})
	f.reply("GET /v1/secret/kv/metadata/", http.StatusOK, api.SecretListResponse{Keys: []string{"app/", "top"}})

	r := f.run("", "secret", "list", "kv/app/").wantCode(t, 0)
	if r.stdout != "db\nsub/\nweb\n" || r.stderr != "" {
		t.Fatalf("list %q %q", r.stdout, r.stderr)
	}
	var qs []string
	for _, rq := range f.requests("GET /v1/secret/kv/metadata/app/") {
		qs = append(qs, rq.Query)
	}
	if want := []string{"list=true", "after=sub%2F&list=true", "after=sub%2Fx&list=true"}; !reflect.DeepEqual(qs, want) {
		t.Fatalf("queries %q", qs)
	}

	r = f.run("", "-o", "json", "secret", "list", "kv/app/", "-r", "--filter", "owner=team-a", "--filter", "env=prod", "--limit", "2").wantCode(t, 0)
	var l api.SecretListResponse
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil || !reflect.DeepEqual(l, api.SecretListResponse{Keys: []string{"db", "sub/"}, Next: "sub/"}) {
		t.Fatalf("json %v: %s", err, r.stdout)
	}
	rs := f.requests("GET /v1/secret/kv/metadata/app/")
	if q := rs[len(rs)-1].Query; q != "filter=owner%3Dteam-a&filter=env%3Dprod&limit=2&list=true&recursive=true" {
		t.Fatalf("query %q", q)
	}
	r = f.run("", "secret", "list", "kv/app/", "--limit", "2").wantCode(t, 0)
	if r.stdout != "db\nsub/\n" || r.stderr != "There are more: run again with --after sub/\n" {
		t.Fatalf("limit %q %q", r.stdout, r.stderr)
	}
	if r = f.run("", "secret", "list", "kv/app/", "--after", "sub/x").wantCode(t, 0); r.stdout != "web\n" {
		t.Fatalf("after %q", r.stdout)
	}

	// The mount alone lists its root.
	if r = f.run("", "secret", "list", "kv").wantCode(t, 0); r.stdout != "app/\ntop\n" {
		t.Fatalf("root %q", r.stdout)
	}
}

func TestSecretVersionOps(t *testing.T) {
	f := newFakeAPI(t)
	for _, route := range []string{"DELETE /v1/secret/kv/data/app/db", "POST /v1/secret/kv/delete/app/db",
		"POST /v1/secret/kv/undelete/app/db", "POST /v1/secret/kv/destroy/app/db"} {
		f.reply(route, http.StatusNoContent, nil)
	}
	versions := func(route string) []int {
		rs := f.requests(route)
		var req api.SecretVersionsRequest
		rs[len(rs)-1].decode(t, &req)
		return req.Versions
	}

	if r := f.run("", "secret", "delete", "kv/app/db").wantCode(t, 0); r.stdout != "Deleted the current version of kv/app/db\n" {
		t.Fatalf("delete %q", r.stdout)
	}
	if b := f.last("DELETE /v1/secret/kv/data/app/db").Body; len(b) != 0 {
		t.Fatalf("body %q", b)
	}
	if r := f.run("", "secret", "delete", "kv/app/db", "--versions", "1,2").wantCode(t, 0); r.stdout != "Deleted versions 1,2 of kv/app/db\n" ||
		!reflect.DeepEqual(versions("POST /v1/secret/kv/delete/app/db"), []int{1, 2}) {
		t.Fatalf("delete versions %q", r.stdout)
	}
	if r := f.run("", "secret", "undelete", "kv/app/db", "--versions", "2", "--versions", "3").wantCode(t, 0); r.stdout != "Undeleted versions 2,3 of kv/app/db\n" ||
		!reflect.DeepEqual(versions("POST /v1/secret/kv/undelete/app/db"), []int{2, 3}) {
		t.Fatalf("undelete %q", r.stdout)
	}
	if r := f.run("", "secret", "destroy", "kv/app/db", "--versions", "4").wantCode(t, 0); r.stdout != "Destroyed version 4 of kv/app/db\n" {
		t.Fatalf("destroy %q", r.stdout)
	}
	if r := f.run("", "-o", "json", "secret", "destroy", "kv/app/db", "--versions", "1").wantCode(t, 0); r.stdout != "" ||
		!reflect.DeepEqual(versions("POST /v1/secret/kv/destroy/app/db"), []int{1}) {
		t.Fatalf("destroy %q", r.stdout)
	}
}

func TestSecretMetadata(t *testing.T) {
	f := newFakeAPI(t)
	md := api.SecretMetadata{
		CreatedTime: testTime, UpdatedTime: testTime.Add(time.Hour), CurrentVersion: 3, OldestVersion: 1, MaxVersions: 10,
		DeleteVersionAfter: "0s", CustomMetadata: map[string]string{"owner": "team-a", "env": "prod"},
		Versions: map[string]api.SecretVersion{
			"1":  {Version: 1, CreatedTime: testTime, Destroyed: true},
			"2":  {Version: 2, CreatedTime: testTime, Deleted: true, DeletionTime: "2030-01-02T04:04:05.123456789Z"},
			"3":  {Version: 3, CreatedTime: testTime.Add(time.Hour)},
			"10": {Version: 10, CreatedTime: testTime.Add(time.Hour)},
		},
	}
	md.CurrentVersion = 10
	f.reply("GET /v1/secret/kv/metadata/app/db", http.StatusOK, md)
	f.reply("PUT /v1/secret/kv/metadata/app/db", http.StatusNoContent, nil)
	f.reply("DELETE /v1/secret/kv/metadata/app/db", http.StatusNoContent, nil)

	r := f.run("", "secret", "metadata", "get", "kv/app/db").wantCode(t, 0)
	checkGolden(t, "secret-metadata.txt", r.stdout)
	if q := f.last("GET /v1/secret/kv/metadata/app/db").Query; q != "" {
		t.Fatalf("query %q", q)
	}
	r = f.run("", "-o", "json", "secret", "metadata", "get", "kv/app/db").wantCode(t, 0)
	var back api.SecretMetadata
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || !reflect.DeepEqual(back, md) {
		t.Fatalf("json %v", err)
	}

	r = f.run("", "secret", "metadata", "put", "kv/app/db", "--max-versions", "4", "--custom", "owner=team-b", "--custom", "note=a=b").wantCode(t, 0)
	var req api.SecretMetadataRequest
	f.last("PUT /v1/secret/kv/metadata/app/db").decode(t, &req)
	want := api.SecretMetadataRequest{MaxVersions: new(4), CustomMetadata: map[string]string{"owner": "team-b", "note": "a=b"}}
	if !reflect.DeepEqual(req, want) || r.stdout != "Wrote the metadata of kv/app/db\n" {
		t.Fatalf("put %+v %q", req, r.stdout)
	}
	f.run("", "secret", "metadata", "put", "kv/app/db", "--cas-required=false", "--delete-version-after", "0s").wantCode(t, 0)
	if b := string(f.requests("PUT /v1/secret/kv/metadata/app/db")[1].Body); b != `{"max_versions":null,"cas_required":false,"delete_version_after":"0s","custom_metadata":null}` {
		t.Fatalf("put body %s", b)
	}

	if r = f.run("", "secret", "metadata", "delete", "kv/app/db").wantCode(t, 0); r.stdout != "Deleted kv/app/db: every version and its metadata\n" {
		t.Fatalf("delete %q", r.stdout)
	}
}

func TestSecretMoveReadMany(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("POST /v1/secret/kv/move", http.StatusNoContent, nil)
	if r := f.run("", "secret", "move", "kv/app/db", "kv/old/db").wantCode(t, 0); r.stdout != "Moved kv/app/db to kv/old/db\n" {
		t.Fatalf("move %q", r.stdout)
	}
	var mv api.SecretMoveRequest
	f.last("POST /v1/secret/kv/move").decode(t, &mv)
	if mv != (api.SecretMoveRequest{From: "app/db", To: "old/db"}) {
		t.Fatalf("move %+v", mv)
	}

	ans := secretAnswer()
	f.reply("POST /v1/secret/kv/read-many", http.StatusOK, api.SecretReadManyResponse{Results: []api.SecretReadManyResult{
		{Path: "app/db", Data: ans.Data, Metadata: &ans.Metadata},
		{Path: "app/none", Error: &api.Error{Code: api.CodeNotFound, Message: `secrets: not found: "app/none"`}},
	}})
	r := f.run("", "secret", "read-many", "kv", "app/db", "app/none").wantCode(t, 1)
	var rm api.SecretReadManyRequest
	f.last("POST /v1/secret/kv/read-many").decode(t, &rm)
	if !reflect.DeepEqual(rm.Paths, []string{"app/db", "app/none"}) || r.stderr != "Error: 1 of 2 paths could not be read\n" {
		t.Fatalf("read-many %+v %q", rm, r.stderr)
	}
	checkGolden(t, "secret-read-many.txt", r.stdout)
	r = f.run("", "-o", "json", "secret", "read-many", "kv", "app/db", "app/none").wantCode(t, 1)
	var resp api.SecretReadManyResponse
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil || len(resp.Results) != 2 || resp.Results[1].Error.Code != api.CodeNotFound {
		t.Fatalf("json %v: %s", err, r.stdout)
	}
}

func TestSecretUsageErrors(t *testing.T) {
	f := newFakeAPI(t)
	many := []string{"secret", "read-many", "kv"}
	for range 101 {
		many = append(many, "p")
	}
	for _, args := range [][]string{
		{"secret", "nope"},
		{"secret", "put", "kv/app/db"},
		{"secret", "put", "kv", "a=1"},
		{"secret", "put", "/app/db", "a=1"},
		{"secret", "put", "kv/app//db", "a=1"},
		{"secret", "put", "kv/app/../db", "a=1"},
		{"secret", "put", "kv/app/db/", "a=1"},
		{"secret", "put", "kv/app/db", "a=1", "--cas", "-1"},
		{"secret", "put", "kv/app/db", "a=1", "--cas", "x"},
		{"secret", "get", "kv/app/db", "--version", "-1"},
		{"secret", "get", "kv"},
		{"secret", "list"},
		{"secret", "list", "kv/a//b"},
		{"secret", "list", "kv", "--filter", "owner"},
		{"secret", "delete", "kv/app/db", "--versions", "0"},
		{"secret", "delete", "kv/app/db", "--versions", "one"},
		{"secret", "undelete", "kv/app/db"},
		{"secret", "destroy", "kv/app/db"},
		{"secret", "metadata", "put", "kv/app/db"},
		{"secret", "metadata", "put", "kv/app/db", "--custom", "novalue"},
		{"secret", "metadata", "get", "kv/app/db", "extra"},
		{"secret", "move", "kv/app/db", "app/db2"},
		{"secret", "move", "kv/app/db", "other/app/db"},
		{"secret", "read-many", "kv/app", "db"},
		{"secret", "read-many", "kv", "a/../b"},
		many,
		{"secret", "mount", "create"},
		{"secret", "mount", "create", "kv", "--delete-version-after", "1 week"},
		{"secret", "mount", "delete", "kv", "--force=maybe"},
	} {
		t.Run(strings.Join(args[:min(len(args), 6)], " "), func(t *testing.T) {
			r := f.run("", args...).wantCode(t, 2)
			if !strings.HasPrefix(r.stderr, "Error: ") || !strings.Contains(r.stderr, "--help' for usage") {
				t.Fatalf("stderr %q", r.stderr)
			}
		})
	}
	if n := len(f.requests("")); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
}
