package api

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/kms"
)

// kmsFixture is a test stack with the node's own, reserved key.
type kmsFixture struct{ *testStack }

// reservedKey is the name the node gives its cluster CA key.
const reservedKey = "_custos-cluster-ca"

func newKMSFixture(t *testing.T) *kmsFixture {
	t.Helper()
	s := newTestStack(t, stackOptions{maxBodyBytes: 64 << 10})
	// The node's own key, made as the node makes it.
	if _, err := s.kms.CreateKey(context.Background(), reservedKey, kms.KeyOptions{Type: kms.TypeECDSAP256}); err != nil {
		t.Fatal(err)
	}
	return &kmsFixture{s}
}

// ok calls as root and fails the test unless the answer is 200.
func (f *kmsFixture) ok(t *testing.T, method, path string, body, out any) {
	t.Helper()
	if status, raw := f.call(t, f.root, method, path, body, out); status != http.StatusOK {
		t.Fatalf("%s %s: status %d: %s", method, path, status, raw)
	}
}

// fails calls as root and checks the error status and code; it returns
// the error message.
func (f *kmsFixture) fails(t *testing.T, method, path string, body any, status int, code string) string {
	t.Helper()
	got, raw := f.call(t, f.root, method, path, body, nil)
	return checkError(t, method+" "+path, got, raw, status, code)
}

func checkError(t *testing.T, what string, got int, raw []byte, status int, code string) string {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(raw, &e); err != nil || e.Error.Error == nil {
		t.Fatalf("%s: status %d, not an error document: %s", what, got, raw)
	}
	if got != status || e.Error.Code != code {
		t.Fatalf("%s: got %d %s (%s), want %d %s", what, got, e.Error.Code, e.Error.Message, status, code)
	}
	return e.Error.Message
}

func b64s(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestKMSKeyManagement(t *testing.T) {
	f := newKMSFixture(t)
	var key KMSKey
	f.ok(t, "POST", "/v1/kms/keys/app", map[string]any{"type": "aes256-gcm96", "auto_rotate_period": "720h"}, &key)
	if key.Name != "app" || key.Type != kms.TypeAES256GCM96 || key.LatestVersion != 1 || key.AutoRotatePeriod != "720h0m0s" ||
		len(key.Versions) != 1 || key.Versions[0].State != kms.StateActive || key.Exportable || !key.DeletionDate.IsZero() {
		t.Fatalf("created key: %+v", key)
	}
	f.fails(t, "POST", "/v1/kms/keys/app", nil, 409, CodeConflict)
	f.fails(t, "POST", "/v1/kms/keys/_mine", nil, 400, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/kms/keys/bad", map[string]any{"type": "des"}, 400, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/kms/keys/bad", map[string]any{"auto_rotate_period": "soon"}, 400, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/kms/keys/bad", map[string]any{"typ": "hmac"}, 400, CodeUnknownField)
	f.fails(t, "POST", "/v1/kms/keys/bad", `{"type":`, 400, CodeMalformedJSON)

	var list ListResponse
	f.ok(t, "GET", "/v1/kms/keys", nil, &list)
	if !slices.Equal(list.Keys, []string{"app"}) {
		t.Fatalf("list = %v, want only app (reserved keys hidden)", list.Keys)
	}
	f.ok(t, "GET", "/v1/kms/keys/app", nil, &key)
	f.ok(t, "POST", "/v1/kms/keys/app/rotate", nil, &key)
	if key.LatestVersion != 2 || len(key.Versions) != 2 {
		t.Fatalf("after rotate: %+v", key)
	}
	f.ok(t, "POST", "/v1/kms/keys/app/config", map[string]any{"min_decryption_version": 2, "auto_rotate_period": "0s"}, &key)
	if key.MinDecryptionVersion != 2 || key.AutoRotatePeriod != "0s" || key.DeletionAllowed {
		t.Fatalf("after config: %+v", key)
	}
	f.fails(t, "POST", "/v1/kms/keys/app/config", map[string]any{"exportable": true}, 403, CodePermissionDenied)
	f.fails(t, "POST", "/v1/kms/keys/app/config", map[string]any{"min_decryption_version": 9}, 400, CodeInvalidArgument)

	f.ok(t, "POST", "/v1/kms/keys/app/versions/1", map[string]any{"state": "disabled"}, &key)
	if key.Versions[0].State != kms.StateDisabled {
		t.Fatalf("after disable: %+v", key.Versions)
	}
	f.fails(t, "POST", "/v1/kms/keys/app/versions/2", map[string]any{"state": "destroyed"}, 403, CodePermissionDenied)
	f.fails(t, "POST", "/v1/kms/keys/app/versions/x", map[string]any{"state": "active"}, 400, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/kms/keys/app/versions/1", map[string]any{"state": "gone"}, 400, CodeInvalidArgument)

	f.fails(t, "DELETE", "/v1/kms/keys/app?wait=720h", nil, 403, CodePermissionDenied)
	f.ok(t, "POST", "/v1/kms/keys/app/config", map[string]any{"deletion_allowed": true}, nil)
	f.fails(t, "DELETE", "/v1/kms/keys/app?wait=1h", nil, 400, CodeInvalidArgument)
	f.ok(t, "DELETE", "/v1/kms/keys/app?wait=720h", nil, &key)
	if d := time.Until(key.DeletionDate); d < 719*time.Hour || d > 720*time.Hour {
		t.Fatalf("deletion date %v is not in 720h", key.DeletionDate)
	}
	f.fails(t, "POST", "/v1/kms/encrypt/app", map[string]any{"plaintext": ""}, 403, CodePermissionDenied)

	f.ok(t, "POST", "/v1/kms/keys/portable", map[string]any{"exportable": true}, nil)
	var x KMSExportResponse
	f.ok(t, "POST", "/v1/kms/export/portable", map[string]any{"version": 1}, &x)
	if raw, err := base64.StdEncoding.DecodeString(x.Key); err != nil || len(raw) != 32 || x.Version != 1 || x.Type != kms.DefaultKeyType {
		t.Fatalf("export: %+v", x)
	}
	f.fails(t, "POST", "/v1/kms/export/app", nil, 403, CodePermissionDenied)
}

func TestKMSEncryption(t *testing.T) {
	f := newKMSFixture(t)
	const secret = "the launch codes are 0000"
	f.ok(t, "POST", "/v1/kms/keys/data", nil, nil)
	var enc KMSResult
	f.ok(t, "POST", "/v1/kms/encrypt/data", map[string]any{"plaintext": b64s(secret), "associated_data": b64s("row 7")}, &enc)
	if !strings.HasPrefix(enc.Ciphertext, "custos:v1:") || enc.KeyVersion != 1 || enc.Plaintext != nil {
		t.Fatalf("encrypt: %+v", enc)
	}
	var dec KMSResult
	f.ok(t, "POST", "/v1/kms/decrypt/data", map[string]any{"ciphertext": enc.Ciphertext, "associated_data": b64s("row 7")}, &dec)
	if dec.Plaintext == nil || *dec.Plaintext != b64s(secret) {
		t.Fatalf("decrypt: %+v", dec)
	}
	body := []byte(enc.Ciphertext)
	body[len(body)-3] ^= 'A' ^ 'B' // one character of the body changed
	for name, req := range map[string]map[string]any{
		"wrong AD":  {"ciphertext": enc.Ciphertext, "associated_data": b64s("row 8")},
		"no AD":     {"ciphertext": enc.Ciphertext},
		"tampered":  {"ciphertext": string(body), "associated_data": b64s("row 7")},
		"truncated": {"ciphertext": enc.Ciphertext[:20], "associated_data": b64s("row 7")},
		"empty":     {"ciphertext": ""},
	} {
		if msg := f.fails(t, "POST", "/v1/kms/decrypt/data", req, 400, CodeInvalidArgument); strings.Contains(msg, secret) {
			t.Errorf("%s: message echoes the plaintext", name)
		}
	}
	f.fails(t, "POST", "/v1/kms/decrypt/nope", map[string]any{"ciphertext": enc.Ciphertext}, 404, CodeNotFound)
	if msg := f.fails(t, "POST", "/v1/kms/encrypt/data", map[string]any{"plaintext": "not base64!"}, 400, CodeInvalidArgument); !strings.Contains(msg, "plaintext") {
		t.Errorf("bad base64 message %q does not name the field", msg)
	}
	if msg := f.fails(t, "POST", "/v1/kms/encrypt/data", map[string]any{"plaintext": "", "associated_data": "%%"}, 400, CodeInvalidArgument); !strings.Contains(msg, "associated_data") {
		t.Errorf("bad base64 message %q does not name the field", msg)
	}

	f.ok(t, "POST", "/v1/kms/keys/data/rotate", nil, nil)
	var rw KMSResult
	f.ok(t, "POST", "/v1/kms/rewrap/data", map[string]any{"ciphertext": enc.Ciphertext, "associated_data": b64s("row 7")}, &rw)
	if !strings.HasPrefix(rw.Ciphertext, "custos:v2:") || rw.KeyVersion != 2 {
		t.Fatalf("rewrap: %+v", rw)
	}
	f.ok(t, "POST", "/v1/kms/decrypt/data", map[string]any{"ciphertext": rw.Ciphertext, "associated_data": b64s("row 7")}, &dec)
	if *dec.Plaintext != b64s(secret) {
		t.Fatal("rewrapped ciphertext decrypts to something else")
	}

	var dk KMSResult
	f.ok(t, "POST", "/v1/kms/datakey/data", map[string]any{"bits": 256, "plaintext": true}, &dk)
	if raw, _ := base64.StdEncoding.DecodeString(*dk.Plaintext); len(raw) != 32 || dk.KeyVersion != 2 {
		t.Fatalf("datakey: %+v", dk)
	}
	f.ok(t, "POST", "/v1/kms/decrypt/data", map[string]any{"ciphertext": dk.Ciphertext}, &dec)
	if *dec.Plaintext != *dk.Plaintext {
		t.Fatal("the wrapped data key is not the plaintext one")
	}
	var wrapped KMSResult
	f.ok(t, "POST", "/v1/kms/datakey/data", map[string]any{"bits": 128}, &wrapped)
	if wrapped.Plaintext != nil || wrapped.Ciphertext == "" {
		t.Fatalf("datakey without plaintext: %+v", wrapped)
	}
	f.fails(t, "POST", "/v1/kms/datakey/data", map[string]any{"bits": 100}, 400, CodeInvalidArgument)

	// Batches: every item gets its own result.
	var batch KMSBatchResponse
	f.ok(t, "POST", "/v1/kms/encrypt/data", map[string]any{"batch_input": []map[string]string{
		{"plaintext": b64s("one")}, {"plaintext": "!!"}, {"plaintext": b64s("three"), "associated_data": b64s("3")},
	}}, &batch)
	r := batch.BatchResults
	if len(r) != 3 || r[0].Ciphertext == "" || r[1].Error == nil || r[1].Error.Code != CodeInvalidArgument ||
		!strings.Contains(r[1].Error.Message, "batch_input[1].plaintext") || r[2].KeyVersion != 2 {
		t.Fatalf("batch encrypt: %s", mustJSON(batch))
	}
	f.ok(t, "POST", "/v1/kms/decrypt/data", map[string]any{"batch_input": []map[string]string{
		{"ciphertext": r[0].Ciphertext}, {"ciphertext": string(body)}, {"ciphertext": r[2].Ciphertext}, {"ciphertext": r[2].Ciphertext, "associated_data": b64s("3")},
	}}, &batch)
	d := batch.BatchResults
	if len(d) != 4 || *d[0].Plaintext != b64s("one") || d[1].Error.Code != CodeInvalidArgument ||
		d[2].Error.Code != CodeInvalidArgument || *d[3].Plaintext != b64s("three") {
		t.Fatalf("batch decrypt: %s", mustJSON(batch))
	}
	f.ok(t, "POST", "/v1/kms/rewrap/data", map[string]any{"batch_input": []map[string]string{{"ciphertext": enc.Ciphertext, "associated_data": b64s("row 7")}}}, &batch)
	if len(batch.BatchResults) != 1 || !strings.HasPrefix(batch.BatchResults[0].Ciphertext, "custos:v2:") {
		t.Fatalf("batch rewrap: %s", mustJSON(batch))
	}
	f.fails(t, "POST", "/v1/kms/encrypt/data", map[string]any{"plaintext": b64s("x"), "batch_input": []any{map[string]string{}}}, 400, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/kms/encrypt/data", map[string]any{"batch_input": []any{}}, 400, CodeInvalidArgument)

	var rnd KMSRandomResponse
	f.ok(t, "POST", "/v1/kms/random", map[string]any{"bytes": 16, "format": "hex"}, &rnd)
	if len(rnd.Random) != 32 {
		t.Fatalf("random hex: %q", rnd.Random)
	}
	f.ok(t, "POST", "/v1/kms/random", nil, &rnd)
	if raw, err := base64.StdEncoding.DecodeString(rnd.Random); err != nil || len(raw) != 32 {
		t.Fatalf("random default: %q", rnd.Random)
	}
	f.fails(t, "POST", "/v1/kms/random", map[string]any{"bytes": kms.MaxRandomBytes + 1}, 400, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/kms/random", map[string]any{"format": "base32"}, 400, CodeInvalidArgument)

	// The audit log saw every request above, and no plaintext.
	log, err := os.ReadFile(f.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(log, []byte(`"path":"/v1/kms/decrypt/data"`)) {
		t.Fatal("the audit log has no decrypt entry")
	}
	for _, s := range []string{secret, b64s(secret), "the launch codes", *dk.Plaintext, b64s("three")} {
		if bytes.Contains(log, []byte(s)) {
			t.Errorf("the audit log holds the plaintext %q", s)
		}
	}
}

func TestKMSSigning(t *testing.T) {
	f := newKMSFixture(t)
	msg := b64s("pay bob 10")
	f.ok(t, "POST", "/v1/kms/keys/ec", map[string]any{"type": "ecdsa-p256"}, nil)
	var sig, v KMSResult
	f.ok(t, "POST", "/v1/kms/sign/ec", map[string]any{"input": msg, "hash": "sha2-256"}, &sig)
	if !strings.HasPrefix(sig.Signature, "custos:v1:") || sig.KeyVersion != 1 {
		t.Fatalf("sign: %+v", sig)
	}
	f.ok(t, "POST", "/v1/kms/verify/ec", map[string]any{"input": msg, "signature": sig.Signature}, &v)
	if v.Valid == nil || !*v.Valid {
		t.Fatalf("verify: %+v", v)
	}
	f.ok(t, "POST", "/v1/kms/verify/ec", map[string]any{"input": b64s("pay bob 1000"), "signature": sig.Signature}, &v)
	if v.Valid == nil || *v.Valid {
		t.Fatalf("verify of another message: %+v", v)
	}
	var pk KMSPublicKeyResponse
	f.ok(t, "GET", "/v1/kms/keys/ec/public", nil, &pk)
	digest := sha256.Sum256([]byte("pay bob 10"))
	if pub, ok := parsePEMKey(t, pk).(*ecdsa.PublicKey); !ok || pk.Version != 1 || !ecdsa.VerifyASN1(pub, digest[:], sigBody(t, sig.Signature)) {
		t.Fatalf("the signature does not verify with the public key %+v", pk)
	}
	f.fails(t, "POST", "/v1/kms/sign/ec", map[string]any{"input": msg, "hash": "none"}, 400, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/kms/sign/ec", map[string]any{"input": msg, "hash": "md5"}, 400, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/kms/verify/ec", map[string]any{"input": msg, "signature": "garbage"}, 400, CodeInvalidArgument)
	f.fails(t, "GET", "/v1/kms/keys/ec/public?version=x", nil, 400, CodeInvalidArgument)

	f.ok(t, "POST", "/v1/kms/keys/ed", map[string]any{"type": "ed25519"}, nil)
	f.ok(t, "POST", "/v1/kms/sign/ed", map[string]any{"input": msg, "hash": "none"}, &sig)
	f.ok(t, "GET", "/v1/kms/keys/ed/public?version=1", nil, &pk)
	if pub, ok := parsePEMKey(t, pk).(ed25519.PublicKey); !ok || !ed25519.Verify(pub, []byte("pay bob 10"), sigBody(t, sig.Signature)) {
		t.Fatal("ed25519 signature does not verify")
	}

	f.ok(t, "POST", "/v1/kms/keys/rsa", map[string]any{"type": "rsa-2048"}, nil)
	f.ok(t, "POST", "/v1/kms/sign/rsa", map[string]any{"input": msg, "signature_algorithm": "pkcs1v15"}, &sig)
	f.ok(t, "GET", "/v1/kms/keys/rsa/public", nil, &pk)
	if pub, ok := parsePEMKey(t, pk).(*rsa.PublicKey); !ok || rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sigBody(t, sig.Signature)) != nil {
		t.Fatal("rsa pkcs1v15 signature does not verify")
	}
	f.ok(t, "POST", "/v1/kms/verify/rsa", map[string]any{"input": msg, "signature": sig.Signature, "signature_algorithm": "pss"}, &v)
	if *v.Valid {
		t.Fatal("a PKCS#1 v1.5 signature verified as PSS")
	}
	f.fails(t, "POST", "/v1/kms/sign/rsa", map[string]any{"input": msg, "signature_algorithm": "raw"}, 400, CodeInvalidArgument)

	var batch KMSBatchResponse
	f.ok(t, "POST", "/v1/kms/sign/ec", map[string]any{"batch_input": []map[string]string{{"input": b64s("a")}, {"input": "?"}, {"input": b64s("b")}}}, &batch)
	s := batch.BatchResults
	if len(s) != 3 || s[0].Signature == "" || s[1].Error == nil || s[2].Signature == "" {
		t.Fatalf("batch sign: %s", mustJSON(batch))
	}
	f.ok(t, "POST", "/v1/kms/verify/ec", map[string]any{"batch_input": []map[string]string{
		{"input": b64s("a"), "signature": s[0].Signature}, {"input": b64s("b"), "signature": s[0].Signature}, {"input": b64s("b"), "signature": "x"},
	}}, &batch)
	if r := batch.BatchResults; len(r) != 3 || !*r[0].Valid || *r[1].Valid || r[2].Error.Code != CodeInvalidArgument {
		t.Fatalf("batch verify: %s", mustJSON(batch))
	}

	f.ok(t, "POST", "/v1/kms/keys/mac", map[string]any{"type": "hmac"}, nil)
	var mac KMSResult
	f.ok(t, "POST", "/v1/kms/hmac/mac", map[string]any{"input": msg, "hash": "sha2-512"}, &mac)
	if !strings.HasPrefix(mac.HMAC, "custos:v1:") || len(sigBody(t, mac.HMAC)) != 64 {
		t.Fatalf("hmac: %+v", mac)
	}
	f.ok(t, "POST", "/v1/kms/verify-hmac/mac", map[string]any{"input": msg, "hmac": mac.HMAC, "hash": "sha2-512"}, &v)
	if !*v.Valid {
		t.Fatal("verify-hmac: not valid")
	}
	f.ok(t, "POST", "/v1/kms/verify-hmac/mac", map[string]any{"input": msg, "hmac": mac.HMAC}, &v)
	if *v.Valid {
		t.Fatal("verify-hmac with another hash: valid")
	}
	f.fails(t, "POST", "/v1/kms/verify-hmac/mac", map[string]any{"input": msg, "signature": mac.HMAC}, 400, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/kms/hmac/mac", map[string]any{"input": msg, "hash": "none"}, 400, CodeInvalidArgument)
	f.fails(t, "POST", "/v1/kms/sign/mac", map[string]any{"input": msg}, 400, CodeInvalidArgument)
	f.fails(t, "GET", "/v1/kms/keys/mac/public", nil, 400, CodeInvalidArgument)
	f.ok(t, "POST", "/v1/kms/hmac/mac", map[string]any{"batch_input": []map[string]string{{"input": b64s("a")}, {"input": b64s("b")}}}, &batch)
	if r := batch.BatchResults; len(r) != 2 || r[0].HMAC == "" || r[0].HMAC == r[1].HMAC {
		t.Fatalf("batch hmac: %s", mustJSON(batch))
	}
	f.ok(t, "POST", "/v1/kms/verify-hmac/mac", map[string]any{"batch_input": []map[string]string{{"input": b64s("a"), "hmac": r0(batch).HMAC}}}, &batch)
	if r := batch.BatchResults; len(r) != 1 || r[0].Valid == nil || !*r[0].Valid {
		t.Fatalf("batch verify-hmac: %s", mustJSON(batch))
	}
}

func TestKMSAccess(t *testing.T) {
	f := newKMSFixture(t)
	f.ok(t, "POST", "/v1/kms/keys/data", nil, nil)

	// Reserved names are absent on every kms route with a key name, even
	// escaped, and cannot be created.
	for _, rt := range f.server.Routes() {
		if !strings.HasPrefix(rt.Pattern, "/v1/kms/") || !strings.Contains(rt.Pattern, "{name}") {
			continue
		}
		for _, name := range []string{reservedKey, "%5Fcustos-cluster-ca"} {
			path := strings.NewReplacer("{name}", name, "{version}", "1").Replace(rt.Pattern)
			got, raw := f.call(t, f.root, rt.Method, path, "{}", nil)
			if rt.Method == "POST" && rt.Pattern == "/v1/kms/keys/{name}" {
				checkError(t, rt.Method+" "+path, got, raw, 400, CodeInvalidArgument)
			} else {
				checkError(t, rt.Method+" "+path, got, raw, 404, CodeNotFound)
			}
		}
	}
	f.fails(t, "GET", "/v1/kms/keys/nope", nil, 404, CodeNotFound)
	f.fails(t, "POST", "/v1/kms/keys/nope/rotate", nil, 404, CodeNotFound)
	f.fails(t, "POST", "/v1/kms/encrypt/a%2Fb", map[string]any{"plaintext": ""}, 400, CodeInvalidArgument)

	// Tokens: none, and one whose policy allows encrypt only.
	got, raw := f.call(t, "", "POST", "/v1/kms/encrypt/data", map[string]any{"plaintext": ""}, nil)
	checkError(t, "no token", got, raw, 401, CodeUnauthenticated)
	ctx := context.Background()
	if err := f.auth.WritePolicy(ctx, "encrypt-only", []byte(`{"path":{"kms/encrypt/*":{"capabilities":["update"]}}}`)); err != nil {
		t.Fatal(err)
	}
	tok, _, err := f.auth.CreateToken(ctx, f.root, auth.TokenRequest{Policies: []string{"encrypt-only"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var enc KMSResult
	if got, raw := f.call(t, tok, "POST", "/v1/kms/encrypt/data", map[string]any{"plaintext": b64s("hi")}, &enc); got != 200 {
		t.Fatalf("encrypt with the encrypt-only policy: %d %s", got, raw)
	}
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/kms/decrypt/data"}, {"GET", "/v1/kms/keys"}, {"GET", "/v1/kms/keys/data"},
		{"POST", "/v1/kms/keys/other"}, {"DELETE", "/v1/kms/keys/data"}, {"POST", "/v1/kms/random"},
	} {
		got, raw := f.call(t, tok, c.method, c.path, map[string]any{"ciphertext": enc.Ciphertext}, nil)
		checkError(t, c.method+" "+c.path, got, raw, 403, CodePermissionDenied)
	}

	// Limits: the body size, and strict JSON.
	big := strings.Repeat("A", 80<<10)
	f.fails(t, "POST", "/v1/kms/encrypt/data", map[string]any{"plaintext": big}, 413, CodeBodyTooLarge)
	f.fails(t, "POST", "/v1/kms/encrypt/data", map[string]any{"plaintext": "", "key": "x"}, 400, CodeUnknownField)
	f.fails(t, "POST", "/v1/kms/encrypt/data", `{"plaintext": ""} {}`, 400, CodeMalformedJSON)
	f.fails(t, "POST", "/v1/kms/encrypt/data", map[string]any{"plaintext": 7}, 400, CodeMalformedJSON)
}

func parsePEMKey(t *testing.T, pk KMSPublicKeyResponse) any {
	t.Helper()
	block, _ := pem.Decode([]byte(pk.PublicKey))
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("public key is not PEM: %q", pk.PublicKey)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// sigBody returns the raw signature or HMAC inside "custos:vN:base64".
func sigBody(t *testing.T, s string) []byte {
	t.Helper()
	_, body, err := kms.ParseCiphertext([]byte(s))
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return body
}

func r0(b KMSBatchResponse) KMSResult { return b.BatchResults[0] }

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
