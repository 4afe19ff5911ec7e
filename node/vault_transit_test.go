package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	vault "github.com/hashicorp/vault/api"
)

// write is Logical().Write that must succeed.
func mustWrite(t *testing.T, c *vault.Client, path string, data map[string]any) *vault.Secret {
	t.Helper()
	sec, err := c.Logical().WriteWithContext(context.Background(), path, data)
	if err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return sec
}

func mustRead(t *testing.T, c *vault.Client, path string) *vault.Secret {
	t.Helper()
	sec, err := c.Logical().ReadWithContext(context.Background(), path)
	if err != nil || sec == nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return sec
}

func str(sec *vault.Secret, k string) string {
	s, _ := sec.Data[k].(string)
	return s
}

func TestVaultTransitRoundTrip(t *testing.T) {
	f := newVaultFixture(t)
	c := f.client(t, f.root, false)
	mustWrite(t, c, "transit/keys/app", map[string]any{"type": "aes256-gcm96", "exportable": true})
	pt := b64("attack at dawn")
	ct1 := str(mustWrite(t, c, "transit/encrypt/app", map[string]any{"plaintext": pt}), "ciphertext")
	if !strings.HasPrefix(ct1, "vault:v1:") {
		t.Fatalf("ciphertext %q", ct1)
	}
	if got := str(mustWrite(t, c, "transit/decrypt/app", map[string]any{"ciphertext": ct1}), "plaintext"); got != pt {
		t.Fatalf("decrypt: %q", got)
	}
	// The native form of the same ciphertext decrypts too.
	native := "custos:v1:" + strings.TrimPrefix(ct1, "vault:v1:")
	if got := str(mustWrite(t, c, "transit/decrypt/app", map[string]any{"ciphertext": native}), "plaintext"); got != pt {
		t.Fatalf("decrypt of custos:v1: %q", got)
	}
	// Rotate: new encryptions use v2, v1 still decrypts, rewrap moves it.
	mustWrite(t, c, "transit/keys/app/rotate", nil)
	key := mustRead(t, c, "transit/keys/app")
	keys, _ := key.Data["keys"].(map[string]any)
	if len(keys) != 2 || key.Data["latest_version"].(json.Number).String() != "2" {
		t.Fatalf("key after rotation: %v", key.Data)
	}
	ct2 := str(mustWrite(t, c, "transit/encrypt/app", map[string]any{"plaintext": pt}), "ciphertext")
	if !strings.HasPrefix(ct2, "vault:v2:") {
		t.Fatalf("after rotation %q", ct2)
	}
	re := str(mustWrite(t, c, "transit/rewrap/app", map[string]any{"ciphertext": ct1}), "ciphertext")
	if !strings.HasPrefix(re, "vault:v2:") {
		t.Fatalf("rewrap %q", re)
	}
	mustWrite(t, c, "transit/keys/app/config", map[string]any{"min_decryption_version": 2})
	if _, err := c.Logical().Write("transit/decrypt/app", map[string]any{"ciphertext": ct1}); statusOf(err) != http.StatusBadRequest && statusOf(err) != http.StatusForbidden {
		t.Fatalf("decrypt below min_decryption_version: %v", err)
	}
	if got := str(mustWrite(t, c, "transit/decrypt/app", map[string]any{"ciphertext": re}), "plaintext"); got != pt {
		t.Fatalf("decrypt after rewrap: %q", got)
	}
	// Batch: per-item results; a bad item fails alone, as Vault's 400 with
	// the results, or with the status asked for.
	batch := []any{map[string]any{"plaintext": b64("a"), "reference": "r1"}, map[string]any{"plaintext": "%%%"}, map[string]any{"plaintext": b64("c")}}
	status, body := f.vaultCall(t, f.root, "POST", "/v1/transit/encrypt/app", map[string]any{"batch_input": batch})
	res := body["data"].(map[string]any)["batch_results"].([]any)
	if status != http.StatusBadRequest || len(res) != 3 || res[1].(map[string]any)["error"] == "" || res[0].(map[string]any)["reference"] != "r1" {
		t.Fatalf("batch with a bad item: %d %v", status, body)
	}
	sec := mustWrite(t, c, "transit/encrypt/app", map[string]any{"batch_input": batch, "partial_failure_response_code": 200})
	items := sec.Data["batch_results"].([]any)
	var dec []any
	for i, it := range items {
		m := it.(map[string]any)
		if i == 1 {
			if m["error"] == nil || m["ciphertext"] != nil {
				t.Fatalf("bad item %v", m)
			}
			continue
		}
		dec = append(dec, map[string]any{"ciphertext": m["ciphertext"]})
	}
	out := mustWrite(t, c, "transit/decrypt/app", map[string]any{"batch_input": dec}).Data["batch_results"].([]any)
	if out[0].(map[string]any)["plaintext"] != b64("a") || out[1].(map[string]any)["plaintext"] != b64("c") {
		t.Fatalf("batch decrypt %v", out)
	}
	// Data keys, random, export.
	dk := mustWrite(t, c, "transit/datakey/plaintext/app", map[string]any{"bits": "256"})
	if len(b64d(t, str(dk, "plaintext"))) != 32 || !strings.HasPrefix(str(dk, "ciphertext"), "vault:v2:") {
		t.Fatalf("datakey %v", dk.Data)
	}
	if got := str(mustWrite(t, c, "transit/decrypt/app", map[string]any{"ciphertext": str(dk, "ciphertext")}), "plaintext"); got != str(dk, "plaintext") {
		t.Fatal("the data key does not decrypt to its plaintext")
	}
	if w := mustWrite(t, c, "transit/datakey/wrapped/app", nil); w.Data["plaintext"] != nil || str(w, "ciphertext") == "" {
		t.Fatalf("wrapped datakey %v", w.Data)
	}
	if r := mustWrite(t, c, "transit/random/24", map[string]any{"format": "hex"}); len(str(r, "random_bytes")) != 48 {
		t.Fatalf("random %v", r.Data)
	}
	ex := mustRead(t, c, "transit/export/encryption-key/app")
	if ks := ex.Data["keys"].(map[string]any); len(ks) != 1 || len(b64d(t, ks["2"].(string))) != 32 {
		t.Fatalf("export %v", ex.Data)
	}
	// Sign and verify, ASN.1 and JWS, and HMAC.
	for _, typ := range []string{"ecdsa-p256", "ed25519", "rsa-2048"} {
		mustWrite(t, c, "transit/keys/sig-"+typ, map[string]any{"type": typ})
		for _, marshal := range []string{"asn1", "jws"} {
			in := map[string]any{"input": b64("msg"), "marshaling_algorithm": marshal, "hash_algorithm": "sha2-256"}
			if typ == "ed25519" {
				delete(in, "hash_algorithm")
			}
			if typ == "rsa-2048" {
				in["signature_algorithm"] = "pkcs1v15"
			}
			sig := str(mustWrite(t, c, "transit/sign/sig-"+typ, in), "signature")
			if !strings.HasPrefix(sig, "vault:v1:") {
				t.Fatalf("%s %s signature %q", typ, marshal, sig)
			}
			if marshal == "jws" && strings.ContainsAny(sig[len("vault:v1:"):], "+/=") {
				t.Fatalf("jws signature is not base64url: %q", sig)
			}
			in["signature"] = sig
			if v := mustWrite(t, c, "transit/verify/sig-"+typ, in); v.Data["valid"] != true {
				t.Fatalf("%s %s: not valid: %v", typ, marshal, v.Data)
			}
			in["input"] = b64("other")
			if v := mustWrite(t, c, "transit/verify/sig-"+typ, in); v.Data["valid"] != false {
				t.Fatalf("%s %s: a signature of another message verified", typ, marshal)
			}
		}
		if k := mustRead(t, c, "transit/keys/sig-"+typ); !strings.Contains(k.Data["keys"].(map[string]any)["1"].(map[string]any)["public_key"].(string), "PUBLIC KEY") {
			t.Fatalf("%s: no public key in %v", typ, k.Data)
		}
	}
	mustWrite(t, c, "transit/keys/mac", map[string]any{"type": "hmac"})
	mac := str(mustWrite(t, c, "transit/hmac/mac/sha2-512", map[string]any{"input": b64("m")}), "hmac")
	if v := mustWrite(t, c, "transit/verify/mac/sha2-512", map[string]any{"input": b64("m"), "hmac": mac}); v.Data["valid"] != true || !strings.HasPrefix(mac, "vault:v1:") {
		t.Fatalf("hmac %q verify %v", mac, v.Data)
	}
	// Delete needs deletion_allowed, as in Vault.
	if _, err := c.Logical().Delete("transit/keys/mac"); statusOf(err) == 0 {
		t.Fatal("deleted a key without deletion_allowed")
	}
	mustWrite(t, c, "transit/keys/mac/config", map[string]any{"deletion_allowed": "true"})
	if _, err := c.Logical().Delete("transit/keys/mac"); err != nil {
		t.Fatalf("delete: %v", err)
	}
}

// TestVaultKubernetesKMSRotation runs the flow of a Kubernetes KMS v2
// plugin backed by Vault transit: encrypt a DEK, take the key ID from the
// key's versions, rotate, see the key ID change, decrypt the old DEK.
func TestVaultKubernetesKMSRotation(t *testing.T) {
	f := newVaultFixture(t)
	c := f.client(t, f.root, true)
	mustWrite(t, c, "transit/keys/kube", map[string]any{"type": "aes256-gcm96"})
	keyID := func() string {
		k := mustRead(t, c, "transit/keys/kube")
		latest := "0"
		for v := range k.Data["keys"].(map[string]any) {
			if len(v) > len(latest) || len(v) == len(latest) && v > latest {
				latest = v
			}
		}
		return "kube:" + latest
	}
	dek := make([]byte, 32)
	rand.Read(dek)
	id1 := keyID()
	old := str(mustWrite(t, c, "transit/encrypt/kube", map[string]any{"plaintext": base64.StdEncoding.EncodeToString(dek)}), "ciphertext")
	mustWrite(t, c, "transit/keys/kube/rotate", nil)
	id2 := keyID()
	if id1 == id2 || id2 != "kube:2" {
		t.Fatalf("key IDs %s then %s", id1, id2)
	}
	if got := b64d(t, str(mustWrite(t, c, "transit/decrypt/kube", map[string]any{"ciphertext": old}), "plaintext")); !bytes.Equal(got, dek) {
		t.Fatal("the old DEK does not decrypt after rotation")
	}
	if ct := str(mustWrite(t, c, "transit/encrypt/kube", map[string]any{"plaintext": base64.StdEncoding.EncodeToString(dek)}), "ciphertext"); !strings.HasPrefix(ct, "vault:v2:") {
		t.Fatalf("encrypt after rotation: %q", ct)
	}
}

// BenchmarkVaultVsNative encrypts 1 KiB over HTTPS through the native
// route and through the Vault route on the same port, in alternating
// rounds from 32 concurrent clients, and reports both rates and their
// ratio (vault/native).
func BenchmarkVaultVsNative(b *testing.B) {
	n, token := startDevNode(b)
	c := newClient(b, n, n.CACertPath())
	c.token = token
	c.must("POST", "/v1/kms/keys/bench", map[string]any{"type": "aes256-gcm96"}, nil)
	pemCA, _ := os.ReadFile(n.CACertPath())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 64,
	}}
	pt := make([]byte, 1024)
	rand.Read(pt)
	body, _ := json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(pt)})
	paths := []struct{ url, header string }{
		{n.APIURL() + "/v1/kms/encrypt/bench", api.TokenHeader},
		{n.APIURL() + api.VaultPrefix + "/v1/transit/encrypt/bench", "X-Vault-Token"},
	}
	var fails atomic.Int64
	run := func(i, count int) time.Duration {
		const workers = 32
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Go(func() {
				for next.Add(1) <= int64(count) {
					req, _ := http.NewRequest("POST", paths[i].url, bytes.NewReader(body))
					req.Header.Set(paths[i].header, token)
					resp, err := hc.Do(req)
					if err != nil {
						fails.Add(1)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						fails.Add(1)
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	run(0, 200) // warm the connections
	run(1, 200)
	b.ResetTimer()
	var spent [2]time.Duration
	const round = 500
	for done := 0; done < b.N; done += round {
		k := min(round, b.N-done)
		spent[0] += run(0, k)
		spent[1] += run(1, k)
	}
	b.StopTimer()
	if f := fails.Load(); f > 0 {
		b.Fatalf("%d requests failed", f)
	}
	native, vaultRate := float64(b.N)/spent[0].Seconds(), float64(b.N)/spent[1].Seconds()
	b.ReportMetric(native, "native-ops/s")
	b.ReportMetric(vaultRate, "vault-ops/s")
	b.ReportMetric(vaultRate/native, "vault/native")
}
