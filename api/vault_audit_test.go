package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/custos-pki/custos/audit"
	"github.com/custos-pki/custos/kms"
)

// TestVaultAuditFields checks that the audit log records what a Vault
// client is sent: the envelope handed to the audit log without decoding the
// body hashes to the same values as the decoded body, less request_id (the
// entry's own) and the envelope's empty fields.
func TestVaultAuditFields(t *testing.T) {
	key := make([]byte, audit.MinKeySize)
	rand.Read(key)
	h, err := audit.NewHasher(key, audit.DefaultAllowKeys())
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]*vaultResponse{
		"encrypt":      {Data: vaultResult{Ciphertext: "vault:v1:AAAA", KeyVersion: 3}},
		"every field":  {Data: vaultResult{Ciphertext: "c", Plaintext: "p", Signature: "s", HMAC: "h", Valid: new(true), KeyVersion: 1 << 40, Reference: "r", Error: "e"}},
		"verify false": {Data: vaultResult{Valid: new(false)}},
		"batch":        {Data: map[string]any{"batch_results": []vaultResult{{Ciphertext: "a", Reference: "r1"}, {Error: "bad"}}}, status: http.StatusBadRequest},
		"token": {Auth: &vaultAuth{ClientToken: "cst_secret", Accessor: "acc", Policies: []string{"p"}, TokenPolicies: []string{"p"},
			Metadata: map[string]string{"role": "r"}, LeaseDuration: 3600, Renewable: true, TokenType: "service", NumUses: 2}},
		"envelope": {LeaseID: "l", Renewable: true, LeaseDuration: 60, Data: map[string]any{"value": "x", "n": 1, "ttl": 5},
			WrapInfo: map[string]any{"token": "w"}, Warnings: []string{"careful"}, MountType: "kv"},
		"key":   {Data: map[string]any{"name": "k", "keys": map[string]any{"1": int64(1700000000)}, "latest_version": 1, "exportable": false}},
		"empty": {},
	} {
		v.RequestID = "0123456789abcdef01234567"
		body, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		decoded := jsonObject(body)
		for k, x := range decoded {
			if k == "request_id" || x == nil || x == "" || x == false || x == float64(0) {
				delete(decoded, k)
			}
		}
		want, _ := json.Marshal(h.Object(decoded))
		got, _ := json.Marshal(h.Object(v.auditFields()))
		if !bytes.Equal(got, want) {
			t.Errorf("%s: audited as\n%s\nwant\n%s", name, got, want)
		}
	}
}

// TestVaultAudit drives the Vault routes over HTTPS and reads the audit
// log: every request has its request and response entries, the secrets
// (plaintexts, ciphertexts, tokens) appear only as their HMACs, and the
// HMACs are those of the values the client was sent.
func TestVaultAudit(t *testing.T) {
	s := newTestStack(t, stackOptions{})
	if _, err := s.kms.CreateKey(context.Background(), "app", kms.KeyOptions{Type: kms.TypeAES256GCM96}); err != nil {
		t.Fatal(err)
	}
	svc, _ := s.server.node.Services()
	h := svc.Audit.Hasher()
	call := func(path string, body any) map[string]any {
		t.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, s.url+VaultPrefix+path, bytes.NewReader(raw))
		req.Header.Set(vaultHeader, s.root)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if resp.StatusCode != http.StatusOK || json.Unmarshal(out, &m) != nil {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, out)
		}
		return m
	}
	secret := b64s("the launch codes")
	enc := call("/v1/transit/encrypt/app", map[string]any{"plaintext": secret, "unknown": 1})["data"].(map[string]any)
	ct := enc["ciphertext"].(string)
	call("/v1/transit/decrypt/app", map[string]any{"ciphertext": ct})
	batch := call("/v1/transit/encrypt/app", map[string]any{"batch_input": []any{map[string]any{"plaintext": secret, "reference": "r1"}}})
	batchCT := batch["data"].(map[string]any)["batch_results"].([]any)[0].(map[string]any)["ciphertext"].(string)
	tok := call("/v1/auth/token/create", map[string]any{"policies": "default", "ttl": "1h"})["auth"].(map[string]any)["client_token"].(string)

	raw, err := os.ReadFile(s.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{secret, "the launch codes", ct, strings.TrimPrefix(ct, "vault:"), batchCT, tok, s.root} {
		if bytes.Contains(raw, []byte(v)) {
			t.Errorf("the audit log holds %q", v)
		}
	}
	type entry struct {
		Type, RequestID, Path string
		Request, Response     map[string]any
	}
	seen := map[string][]entry{} // by request ID
	var order []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct {
			Type      string         `json:"type"`
			RequestID string         `json:"request_id"`
			Path      string         `json:"path"`
			Request   map[string]any `json:"request"`
			Response  map[string]any `json:"response"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %s: %v", sc.Bytes(), err)
		}
		if _, ok := seen[e.RequestID]; !ok {
			order = append(order, e.RequestID)
		}
		seen[e.RequestID] = append(seen[e.RequestID], entry(e))
	}
	if len(order) != 4 {
		t.Fatalf("%d audited requests, want 4:\n%s", len(order), raw)
	}
	for _, id := range order {
		if es := seen[id]; len(es) != 2 || es[0].Type != audit.TypeRequest || es[1].Type != audit.TypeResponse {
			t.Fatalf("request %s: entries %+v", id, es)
		}
	}
	resp := func(i int) map[string]any { return seen[order[i]][1].Response }
	if d := resp(0)["data"].(map[string]any); d["ciphertext"] != h.HMAC(ct) || d["key_version"] != h.HMAC("1") || len(d) != 2 {
		t.Errorf("encrypt response audited as %v", resp(0))
	}
	if req := seen[order[0]][0].Request; req["plaintext"] != h.HMAC(secret) || req["unknown"] != h.HMAC("1") {
		t.Errorf("encrypt request audited as %v", req)
	}
	if d := resp(1)["data"].(map[string]any); d["plaintext"] != h.HMAC(secret) {
		t.Errorf("decrypt response audited as %v", resp(1))
	}
	item := resp(2)["data"].(map[string]any)["batch_results"].([]any)[0].(map[string]any)
	if item["ciphertext"] != h.HMAC(batchCT) || item["reference"] != h.HMAC("r1") {
		t.Errorf("batch response audited as %v", resp(2))
	}
	if a := resp(3)["auth"].(map[string]any); a["client_token"] != h.HMAC(tok) || resp(3)["renewable"] != nil {
		t.Errorf("token create response audited as %v", resp(3))
	}
	if _, ok := resp(0)["request_id"]; ok {
		t.Errorf("request_id logged again in the response: %v", resp(0))
	}
}

// TestVaultEmptyBatch: an empty batch_input is refused, as Vault refuses
// it ("missing batch input to process"), rather than taken for a single
// item with no fields.
func TestVaultEmptyBatch(t *testing.T) {
	s := newTestStack(t, stackOptions{})
	if _, err := s.kms.CreateKey(context.Background(), "app", kms.KeyOptions{Type: kms.TypeAES256GCM96}); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"encrypt", "decrypt", "rewrap", "sign", "verify", "hmac"} {
		req, _ := http.NewRequest(http.MethodPost, s.url+VaultPrefix+"/v1/transit/"+op+"/app", strings.NewReader(`{"batch_input":[]}`))
		req.Header.Set(vaultHeader, s.root)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Errors []string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || err != nil || len(body.Errors) != 1 {
			t.Errorf("%s with an empty batch: %d %v %v", op, resp.StatusCode, body, err)
		}
	}
}
