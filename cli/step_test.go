package cli

import (
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/custos-pki/custos/api"
)

func TestStepProvisionerCommands(t *testing.T) {
	f := newFakeAPI(t)
	stored := api.StepProvisioner{Name: "ops", AllowedNames: []string{".svc.example.com"}, DeniedNames: []string{},
		MaxLifetime: "24h0m0s", KeyTypes: []string{"ecdsa-p256"}, KeyID: "kid-1"}
	f.reply("POST /v1/ca/step/provisioners", http.StatusOK, stored)
	f.reply("GET /v1/ca/step/provisioners", http.StatusOK, api.StepProvisionerList{Provisioners: []api.StepProvisioner{stored}})
	f.reply("DELETE /v1/ca/step/provisioners/ops", http.StatusOK, map[string]any{})
	f.reply("GET /roots", http.StatusOK, map[string]any{"crts": []string{"-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n"}})
	f.reply("GET /federation", http.StatusOK, map[string]any{"crts": []string{
		"-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n", "-----BEGIN CERTIFICATE-----\nBAUG\n-----END CERTIFICATE-----\n"}})

	pwFile := filepath.Join(t.TempDir(), "ops.pass")
	if err := os.WriteFile(pwFile, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := f.run("", "ca", "step", "provisioner", "create", "ops", "--password-file", pwFile,
		"--allowed-names", ".svc.example.com", "--max-lifetime", "24h").wantCode(t, 0)
	var got api.StepProvisioner
	f.requests("POST /v1/ca/step/provisioners")[0].decode(t, &got)
	want := api.StepProvisioner{Name: "ops", AllowedNames: []string{".svc.example.com"}, MaxLifetime: "24h", Password: "correct horse battery staple"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("create body %+v, want %+v", got, want)
	}
	if !strings.Contains(r.stdout, "kid-1") || strings.Contains(r.stdout, "horse") {
		t.Errorf("create output %q", r.stdout)
	}
	f.run("", "ca", "step", "provisioner", "create", "ops").wantCode(t, 2)
	f.run("", "ca", "step", "provisioner", "create", "ops", "--password-file", pwFile, "--require-eab").wantCode(t, 2)

	if r = f.run("", "ca", "step", "provisioner", "list").wantCode(t, 0); !strings.Contains(r.stdout, "kid-1") {
		t.Errorf("list %q", r.stdout)
	}
	if r = f.run("", "ca", "step", "provisioner", "delete", "ops").wantCode(t, 0); r.stdout != "Deleted JWK provisioner ops\n" {
		t.Errorf("delete %q", r.stdout)
	}
	// bootstrap prints the SHA-256 of the federated root that is not a PKI
	// root: sha256(04 05 06).
	r = f.run("", "ca", "step", "bootstrap").wantCode(t, 0)
	const fp = "787c798e39a5bc1910355bae6d0cd87a36b2e10fd0202a83e3bb6b005da83472"
	if !strings.Contains(r.stdout, "--fingerprint "+fp) {
		t.Errorf("bootstrap %q", r.stdout)
	}
}
