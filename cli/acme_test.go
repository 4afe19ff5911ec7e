package cli

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/custos-pki/custos/api"
)

func TestACMEProvisionerCommands(t *testing.T) {
	f := newFakeAPI(t)
	stored := api.ACMEProvisioner{
		Name: "internal", AllowedNames: []string{".svc.example.com"}, DeniedNames: []string{}, MaxLifetime: "168h0m0s",
		KeyTypes: []string{"ecdsa-p256"}, RequireEAB: true, Directory: "/acme/internal/directory",
	}
	f.reply("POST /v1/ca/acme/provisioners", http.StatusOK, stored)
	f.reply("GET /v1/ca/acme/provisioners/internal", http.StatusOK, stored)
	f.reply("PUT /v1/ca/acme/provisioners/internal", http.StatusOK, stored)
	f.reply("GET /v1/ca/acme/provisioners", http.StatusOK, api.ACMEProvisionerList{Provisioners: []api.ACMEProvisioner{stored}})
	f.reply("DELETE /v1/ca/acme/provisioners/internal", http.StatusNoContent, nil)
	f.reply("POST /v1/ca/acme/eab", http.StatusOK, api.EABResponse{KeyID: "kid", HMACKey: "key", Provisioner: "internal"})

	r := f.run("", "ca", "acme", "provisioner", "create", "internal", "--require-eab", "--allowed-names", ".svc.example.com",
		"--max-lifetime", "168h", "--key-types", "ecdsa-p256").wantCode(t, 0)
	var got api.ACMEProvisioner
	f.requests("POST /v1/ca/acme/provisioners")[0].decode(t, &got)
	want := api.ACMEProvisioner{Name: "internal", AllowedNames: []string{".svc.example.com"}, MaxLifetime: "168h", KeyTypes: []string{"ecdsa-p256"}, RequireEAB: true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("create body %+v, want %+v", got, want)
	}
	if !strings.Contains(r.stdout, "/acme/internal/directory") {
		t.Errorf("create output %q", r.stdout)
	}

	// update changes the fields given and keeps the others.
	f.run("", "ca", "acme", "provisioner", "update", "internal", "--denied-names", "db.svc.example.com", "--require-eab=false").wantCode(t, 0)
	f.requests("PUT /v1/ca/acme/provisioners/internal")[0].decode(t, &got)
	want = stored
	want.Directory, want.DeniedNames, want.RequireEAB = "", []string{"db.svc.example.com"}, false
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("update body %+v, want %+v", got, want)
	}

	if r = f.run("", "ca", "acme", "provisioner", "list").wantCode(t, 0); !strings.Contains(r.stdout, "internal") {
		t.Errorf("list %q", r.stdout)
	}
	f.run("", "ca", "acme", "provisioner", "read", "internal").wantCode(t, 0)
	if r = f.run("", "ca", "acme", "provisioner", "delete", "internal").wantCode(t, 0); r.stdout != "Deleted ACME provisioner internal\n" {
		t.Errorf("delete %q", r.stdout)
	}

	f.run("", "ca", "acme", "eab", "create", "--provisioner", "internal").wantCode(t, 0)
	var eab api.EABRequest
	f.requests("POST /v1/ca/acme/eab")[0].decode(t, &eab)
	if eab.Provisioner != "internal" {
		t.Errorf("eab body %+v", eab)
	}
}
