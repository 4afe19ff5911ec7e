package cli

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
)

func TestCAWorkload(t *testing.T) {
	f := newFakeAPI(t)
	stored := api.WorkloadEntry{
		ID: "0123456789abcdef0123456789abcdef", SPIFFEID: "spiffe://example.org/web",
		Selectors: []string{"unix:gid:50", "unix:uid:1000"}, Role: "web", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	f.reply("POST /v1/ca/workloads", http.StatusOK, stored)
	f.reply("GET /v1/ca/workloads/"+stored.ID, http.StatusOK, stored)
	f.reply("GET /v1/ca/workloads", http.StatusOK, api.WorkloadEntryList{Entries: []api.WorkloadEntry{stored}})
	f.reply("DELETE /v1/ca/workloads/"+stored.ID, http.StatusNoContent, nil)

	r := f.run("", "ca", "workload", "create", "--spiffe-id", "spiffe://example.org/web",
		"--selector", "unix:uid:1000", "--selector", "unix:gid:50", "--role", "web").wantCode(t, 0)
	var sent api.WorkloadEntry
	f.last("POST /v1/ca/workloads").decode(t, &sent)
	want := api.WorkloadEntry{SPIFFEID: "spiffe://example.org/web", Selectors: []string{"unix:uid:1000", "unix:gid:50"}, Role: "web"}
	if !reflect.DeepEqual(sent, want) {
		t.Fatalf("create body %+v, want %+v", sent, want)
	}
	checkGolden(t, "ca-workload.txt", r.stdout)
	r = f.run("", "ca", "workload", "read", stored.ID).wantCode(t, 0)
	checkGolden(t, "ca-workload.txt", r.stdout)
	r = f.run("", "ca", "workload", "list").wantCode(t, 0)
	if !strings.Contains(r.stdout, stored.ID) || !strings.Contains(r.stdout, "unix:gid:50,unix:uid:1000") {
		t.Fatalf("list:\n%s", r.stdout)
	}
	if r = f.run("", "ca", "workload", "delete", stored.ID).wantCode(t, 0); r.stdout != "Deleted registration entry "+stored.ID+"\n" {
		t.Fatalf("delete %q", r.stdout)
	}
	for _, args := range [][]string{
		{"--selector", "unix:uid:1", "--role", "web"},
		{"--spiffe-id", "spiffe://example.org/x", "--role", "web"},
		{"--spiffe-id", "spiffe://example.org/x", "--selector", "unix:uid:1"},
	} {
		f.run("", append([]string{"ca", "workload", "create"}, args...)...).wantCode(t, 2)
	}
	if n := len(f.requests("POST /v1/ca/workloads")); n != 1 {
		t.Fatalf("%d creations sent, want only the valid one", n)
	}
}
