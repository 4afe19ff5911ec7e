package cli

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/kms"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// keyInfo is a key as the kms routes describe it.
func keyInfo() api.KMSKey {
	return api.KMSKey{
		Name: "demo", Type: kms.TypeAES256GCM96HKDF, Created: testTime, LatestVersion: 2,
		MinDecryptionVersion: 1, DeletionAllowed: true, AutoRotatePeriod: "720h0m0s",
		Versions: []api.KMSKeyVersion{
			{Version: 1, State: kms.StateActive, Created: testTime, Uses: 10, Decryptions: 4},
			{Version: 2, State: kms.StateActive, Created: testTime.Add(24 * time.Hour)},
		},
	}
}

func ptr[T any](v T) *T { return &v }

func TestKMSKeys(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("POST /v1/kms/keys/demo", http.StatusOK, keyInfo())
	f.reply("GET /v1/kms/keys/demo", http.StatusOK, keyInfo())
	f.reply("POST /v1/kms/keys/demo/rotate", http.StatusOK, keyInfo())
	f.reply("POST /v1/kms/keys/demo/config", http.StatusOK, keyInfo())
	deleted := keyInfo()
	deleted.DeletionDate = testTime.Add(30 * 24 * time.Hour)
	f.reply("DELETE /v1/kms/keys/demo", http.StatusOK, deleted)
	f.reply("GET /v1/kms/keys", http.StatusOK, api.ListResponse{Keys: []string{"demo", "signing"}})

	f.run("", "kms", "key", "create", "demo", "--type", "ed25519", "--exportable", "--deletion-allowed",
		"--auto-rotate-period", "720h", "--auto-rotate-uses", "1000").wantCode(t, 0)
	var create api.KMSKeyCreateRequest
	f.last("POST /v1/kms/keys/demo").decode(t, &create)
	if create != (api.KMSKeyCreateRequest{Type: "ed25519", Exportable: true, DeletionAllowed: true, AutoRotatePeriod: "720h", AutoRotateUses: 1000}) {
		t.Fatalf("create %+v", create)
	}

	r := f.run("", "kms", "key", "show", "demo").wantCode(t, 0)
	checkGolden(t, "kms-key-show.txt", r.stdout)
	r = f.run("", "-o", "json", "kms", "key", "show", "demo").wantCode(t, 0)
	var back api.KMSKey
	if err := json.Unmarshal([]byte(r.stdout), &back); err != nil || !reflect.DeepEqual(back, keyInfo()) {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}

	f.run("", "kms", "key", "rotate", "demo").wantCode(t, 0)
	f.last("POST /v1/kms/keys/demo/rotate")

	// Only the flags given are sent.
	f.run("", "kms", "key", "config", "demo", "--min-decryption-version", "2", "--exportable=false").wantCode(t, 0)
	var conf api.KMSKeyConfigRequest
	f.last("POST /v1/kms/keys/demo/config").decode(t, &conf)
	if !reflect.DeepEqual(conf, api.KMSKeyConfigRequest{MinDecryptionVersion: ptr(2), Exportable: ptr(false)}) {
		t.Fatalf("config %+v", conf)
	}

	r = f.run("", "kms", "key", "delete", "demo", "--wait", "720h").wantCode(t, 0)
	if q := f.last("DELETE /v1/kms/keys/demo").Query; q != "wait=720h" || !strings.Contains(r.stdout, "2030-02-01T03:04:05Z") {
		t.Fatalf("query %q, stdout:\n%s", q, r.stdout)
	}

	r = f.run("", "kms", "key", "list").wantCode(t, 0)
	if r.stdout != "demo\nsigning\n" {
		t.Fatalf("list %q", r.stdout)
	}
}

func encReq(pt, ad string, version int) api.KMSEncryptRequest {
	return api.KMSEncryptRequest{KMSEncryptItem: api.KMSEncryptItem{Plaintext: pt, AssociatedData: ad}, Version: version}
}

func TestKMSEncryptDecrypt(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("POST /v1/kms/encrypt/demo", http.StatusOK, map[string]string{"ciphertext": "custos:v1:abc"})
	f.reply("POST /v1/kms/decrypt/demo", http.StatusOK, map[string]string{"plaintext": b64("hello\x00\xffworld")})
	f.reply("POST /v1/kms/rewrap/demo", http.StatusOK, map[string]string{"ciphertext": "custos:v2:def"})
	file := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(file, []byte("from a file"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, stdin string
		args        []string
		want        api.KMSEncryptRequest
	}{
		{name: "argument", args: []string{"hello"}, want: encReq(b64("hello"), "", 0)},
		{name: "stdin", stdin: "piped\n", args: []string{"-"}, want: encReq(b64("piped\n"), "", 0)},
		{name: "file", args: []string{"--file", file}, want: encReq(b64("from a file"), "", 0)},
		{name: "ad and version", args: []string{"x", "--ad", "ctx", "--version", "2"}, want: encReq(b64("x"), b64("ctx"), 2)},
		{name: "base64 input", args: []string{"AAEC", "--input-encoding", "base64"}, want: encReq("AAEC", "", 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.run(tc.stdin, append([]string{"kms", "encrypt", "demo"}, tc.args...)...).wantCode(t, 0)
			rs := f.requests("POST /v1/kms/encrypt/demo")
			var got api.KMSEncryptRequest
			rs[len(rs)-1].decode(t, &got)
			if !reflect.DeepEqual(got, tc.want) || r.stdout != "custos:v1:abc\n" {
				t.Fatalf("request %+v, want %+v; stdout %q", got, tc.want, r.stdout)
			}
		})
	}
	r := f.run("", "-o", "json", "kms", "encrypt", "demo", "x").wantCode(t, 0)
	if strings.TrimSpace(r.stdout) != "{\n  \"ciphertext\": \"custos:v1:abc\"\n}" {
		t.Fatalf("json %q", r.stdout)
	}

	// Decrypt writes the plaintext bytes as they are; JSON keeps base64.
	r = f.run("  custos:v1:abc \n", "kms", "decrypt", "demo", "-", "--ad", "ctx").wantCode(t, 0)
	var dreq api.KMSDecryptRequest
	f.last("POST /v1/kms/decrypt/demo").decode(t, &dreq)
	if dreq.KMSDecryptItem != (api.KMSDecryptItem{Ciphertext: "custos:v1:abc", AssociatedData: b64("ctx")}) || r.stdout != "hello\x00\xffworld" {
		t.Fatalf("request %+v, stdout %q", dreq, r.stdout)
	}
	r = f.run("", "-o", "json", "kms", "decrypt", "demo", "custos:v1:abc").wantCode(t, 0)
	var dresp api.KMSResult
	if err := json.Unmarshal([]byte(r.stdout), &dresp); err != nil || dresp.Plaintext == nil || *dresp.Plaintext != b64("hello\x00\xffworld") {
		t.Fatalf("%v %q", err, r.stdout)
	}
	f.run("   \n", "kms", "decrypt", "demo", "-").wantCode(t, 1)

	r = f.run("", "kms", "rewrap", "demo", "custos:v1:abc").wantCode(t, 0)
	var rw api.KMSDecryptRequest
	f.last("POST /v1/kms/rewrap/demo").decode(t, &rw)
	if r.stdout != "custos:v2:def\n" || rw.Ciphertext != "custos:v1:abc" {
		t.Fatalf("rewrap %q", r.stdout)
	}
}

func TestKMSSignVerifyHMAC(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("POST /v1/kms/sign/signer", http.StatusOK, map[string]string{"signature": "custos:v1:sig"})
	f.reply("POST /v1/kms/hmac/mac", http.StatusOK, map[string]string{"hmac": "custos:v1:mac"})
	valid := true
	f.on("POST /v1/kms/verify/signer", func(recorded) (int, any) { return http.StatusOK, map[string]bool{"valid": valid} })

	r := f.run("", "kms", "sign", "signer", "abcd", "--input-encoding", "hex", "--prehashed", "--hash", "sha2-256").wantCode(t, 0)
	var sreq api.KMSSignRequest
	f.last("POST /v1/kms/sign/signer").decode(t, &sreq)
	if sreq.Input != "q80=" || sreq.KMSSignOptions != (api.KMSSignOptions{Hash: "sha2-256", Prehashed: true}) || r.stdout != "custos:v1:sig\n" {
		t.Fatalf("sign %+v %q", sreq, r.stdout)
	}

	r = f.run("msg", "kms", "verify", "signer", "-", "--signature", "custos:v1:sig").wantCode(t, 0)
	var vreq api.KMSVerifyRequest
	f.last("POST /v1/kms/verify/signer").decode(t, &vreq)
	if vreq.KMSVerifyItem != (api.KMSVerifyItem{Input: b64("msg"), Signature: "custos:v1:sig"}) || !strings.Contains(r.stdout, "is valid") {
		t.Fatalf("verify %+v %q", vreq, r.stdout)
	}
	valid = false
	r = f.run("", "kms", "verify", "signer", "msg", "--signature", "custos:v1:sig").wantCode(t, 1)
	if !strings.Contains(r.stdout, "NOT valid") || r.stderr != "" {
		t.Fatalf("invalid: %+v", r)
	}
	r = f.run("", "-o", "json", "kms", "verify", "signer", "msg", "--signature", "s").wantCode(t, 1)
	if strings.TrimSpace(r.stdout) != "{\n  \"valid\": false\n}" {
		t.Fatalf("json invalid %q", r.stdout)
	}

	r = f.run("", "kms", "hmac", "mac", "data", "--hash", "sha2-512").wantCode(t, 0)
	var hreq api.KMSSignRequest
	f.last("POST /v1/kms/hmac/mac").decode(t, &hreq)
	if r.stdout != "custos:v1:mac\n" || hreq.Input != b64("data") || hreq.Hash != "sha2-512" {
		t.Fatalf("hmac %q", r.stdout)
	}

	f.reply("POST /v1/kms/verify-hmac/mac", http.StatusOK, map[string]bool{"valid": true})
	r = f.run("", "kms", "verify", "mac", "data", "--hmac", "custos:v1:mac").wantCode(t, 0)
	var vh api.KMSVerifyRequest
	f.last("POST /v1/kms/verify-hmac/mac").decode(t, &vh)
	if vh.KMSVerifyItem != (api.KMSVerifyItem{Input: b64("data"), HMAC: "custos:v1:mac"}) || !strings.Contains(r.stdout, "The HMAC is valid") {
		t.Fatalf("verify-hmac %+v %q", vh, r.stdout)
	}
}

func TestKMSDataKeyRandom(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("POST /v1/kms/datakey/demo", http.StatusOK, map[string]string{"ciphertext": "custos:v1:dk", "plaintext": "a2V5"})
	f.reply("POST /v1/kms/random", http.StatusOK, map[string]string{"random": "cmFuZA=="})

	r := f.run("", "kms", "datakey", "demo", "--bits", "128", "--plaintext").wantCode(t, 0)
	var dk api.KMSDataKeyRequest
	f.last("POST /v1/kms/datakey/demo").decode(t, &dk)
	if dk != (api.KMSDataKeyRequest{Bits: 128, Plaintext: true}) || !strings.Contains(r.stdout, "Plaintext (base64)  a2V5") {
		t.Fatalf("datakey:\n%s", r.stdout)
	}
	r = f.run("", "kms", "random", "--bytes", "4").wantCode(t, 0)
	var rr api.KMSRandomRequest
	f.last("POST /v1/kms/random").decode(t, &rr)
	if r.stdout != "cmFuZA==\n" || rr != (api.KMSRandomRequest{Bytes: 4, Format: "base64"}) {
		t.Fatalf("random %q", r.stdout)
	}
}

func TestKMSKeyNameEscaped(t *testing.T) {
	f := newFakeAPI(t)
	f.run("", "kms", "key", "show", "../sys/seal").wantCode(t, 1)
	if rs := f.requests(""); len(rs) != 1 || rs[0].Path != "/v1/kms/keys/../sys/seal" || rs[0].Method != http.MethodGet {
		// The name is one path segment: its slashes are escaped, so the
		// request cannot reach another route.
		t.Fatalf("requests %+v", rs)
	}
}
