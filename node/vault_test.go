package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/internal/testutil/testca"
	vault "github.com/hashicorp/vault/api"
)

// vaultFixture is one real node with its Vault API listener, a root token,
// a KV mount "kv", and Vault clients (github.com/hashicorp/vault/api) for
// the listener and for /vault/ on the API port.
type vaultFixture struct {
	n      *Node
	tc     *testCluster
	root   string
	native *client
}

func newVaultFixture(t *testing.T) *vaultFixture {
	t.Helper()
	tc := newTestClusterWith(t, 1, func(c *Config) { c.VaultAddr = "127.0.0.1:0" })
	f := &vaultFixture{n: tc.nodes[0], tc: tc, root: tc.root}
	if f.n.VaultURL() == "" {
		t.Fatal("no Vault listener")
	}
	f.native = newClient(t, f.n, tc.caFile)
	f.native.token = tc.root
	f.native.must("POST", "/v1/sys/mounts/kv", map[string]any{}, nil)
	return f
}

// client returns a Vault client with token tok, on the Vault listener or,
// with onAPIPort, at https://<api>/vault.
func (f *vaultFixture) client(t *testing.T, tok string, onAPIPort bool) *vault.Client {
	t.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = f.n.VaultURL()
	if onAPIPort {
		cfg.Address = f.n.APIURL() + api.VaultPrefix
	}
	cfg.MaxRetries = 0
	cfg.Timeout = 30 * time.Second
	if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: f.tc.caFile}); err != nil {
		t.Fatal(err)
	}
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	return c
}

// statusOf returns the HTTP status of a Vault client error (0 if none).
func statusOf(err error) int {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

func TestVaultKVv2RoundTrip(t *testing.T) {
	f := newVaultFixture(t)
	ctx := context.Background()
	for _, onAPIPort := range []bool{false, true} {
		c := f.client(t, f.root, onAPIPort)
		kv := c.KVv2("kv")
		path := "app/db"
		if onAPIPort {
			path = "app/api-port"
		}
		v1, err := kv.Put(ctx, path, map[string]any{"user": "alice", "pass": "s3cret"})
		if err != nil {
			t.Fatalf("put: %v", err)
		}
		if v1.VersionMetadata == nil || v1.VersionMetadata.Version != 1 {
			t.Fatalf("put answered %+v", v1.VersionMetadata)
		}
		got, err := kv.Get(ctx, path)
		if err != nil || got.Data["user"] != "alice" || got.VersionMetadata.Version != 1 {
			t.Fatalf("get: %v %+v", err, got)
		}
		if _, err := kv.Patch(ctx, path, map[string]any{"pass": "n3w", "port": 5432}); err != nil {
			t.Fatalf("patch: %v", err)
		}
		got, err = kv.Get(ctx, path)
		if err != nil || got.Data["pass"] != "n3w" || got.Data["user"] != "alice" || got.VersionMetadata.Version != 2 {
			t.Fatalf("get after patch: %v %+v", err, got)
		}
		old, err := kv.GetVersion(ctx, path, 1)
		if err != nil || old.Data["pass"] != "s3cret" {
			t.Fatalf("get version 1: %v %+v", err, old)
		}
		if err := kv.Delete(ctx, path); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if _, err := kv.Get(ctx, path); err == nil {
			t.Fatal("get of a deleted version succeeded")
		}
		if err := kv.Undelete(ctx, path, []int{2}); err != nil {
			t.Fatalf("undelete: %v", err)
		}
		if got, err = kv.Get(ctx, path); err != nil || got.Data["pass"] != "n3w" {
			t.Fatalf("get after undelete: %v %+v", err, got)
		}
		if err := kv.Destroy(ctx, path, []int{1}); err != nil {
			t.Fatalf("destroy: %v", err)
		}
		if _, err := kv.GetVersion(ctx, path, 1); err == nil {
			t.Fatal("a destroyed version was read")
		}
		if err := kv.PutMetadata(ctx, path, vault.KVMetadataPutInput{MaxVersions: 5, CustomMetadata: map[string]any{"owner": "team-a"}}); err != nil {
			t.Fatalf("put metadata: %v", err)
		}
		md, err := kv.GetMetadata(ctx, path)
		if err != nil || md.MaxVersions != 5 || md.CurrentVersion != 2 || md.CustomMetadata["owner"] != "team-a" || len(md.Versions) != 2 {
			t.Fatalf("metadata: %v %+v", err, md)
		}
		if !md.Versions["1"].Destroyed {
			t.Fatalf("version 1 not destroyed in the metadata: %+v", md.Versions)
		}
		if err := kv.PatchMetadata(ctx, path, vault.KVMetadataPatchInput{CustomMetadata: map[string]any{"env": "prod"}}); err != nil {
			t.Fatalf("patch metadata: %v", err)
		}
		if md, err = kv.GetMetadata(ctx, path); err != nil || md.CustomMetadata["owner"] != "team-a" || md.CustomMetadata["env"] != "prod" || md.MaxVersions != 5 {
			t.Fatalf("metadata after patch: %v %+v", err, md)
		}
		vs, err := kv.GetVersionsAsList(ctx, path)
		if err != nil || len(vs) != 2 {
			t.Fatalf("versions: %v %+v", err, vs)
		}
		list, err := c.Logical().ListWithContext(ctx, "kv/metadata/app")
		if err != nil || list == nil {
			t.Fatalf("list: %v", err)
		}
		keys, _ := list.Data["keys"].([]any)
		if !slices.Contains(keys, any(strings.TrimPrefix(path, "app/"))) {
			t.Fatalf("list: %v", list.Data)
		}
		// Logical() writes and reads the same data.
		if _, err := c.Logical().WriteWithContext(ctx, "kv/data/logical", map[string]any{"data": map[string]any{"a": "1"}, "options": map[string]any{"cas": 0}}); err != nil {
			t.Fatalf("logical write: %v", err)
		}
		if _, err := c.Logical().WriteWithContext(ctx, "kv/data/logical", map[string]any{"data": map[string]any{"a": "2"}, "options": map[string]any{"cas": "0"}}); statusOf(err) != http.StatusBadRequest {
			t.Fatalf("a failed check-and-set: %v", err)
		}
		sec, err := c.Logical().ReadWithContext(ctx, "kv/data/logical")
		if err != nil || sec.Data["data"].(map[string]any)["a"] != "1" || sec.RequestID == "" {
			t.Fatalf("logical read: %v %+v", err, sec)
		}
		if err := kv.DeleteMetadata(ctx, "logical"); err != nil {
			t.Fatalf("delete metadata: %v", err)
		}
		if sec, err := c.Logical().ReadWithContext(ctx, "kv/data/logical"); err != nil || sec != nil {
			t.Fatalf("read after metadata delete: %v %+v", err, sec)
		}
	}
	// The vault CLI asks which KV version a mount is.
	sec, err := f.client(t, f.root, false).Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/kv/app/db")
	if err != nil || sec.Data["type"] != "kv" || sec.Data["options"].(map[string]any)["version"] != "2" {
		t.Fatalf("ui mounts: %v %+v", err, sec)
	}
}

func TestVaultTokenLifecycle(t *testing.T) {
	f := newVaultFixture(t)
	ctx := context.Background()
	c := f.client(t, f.root, false)
	sec, err := c.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{
		Policies: []string{"default"}, TTL: "1h", ExplicitMaxTTL: "2h", NumUses: 10, DisplayName: "agent", Type: "service",
		EntityAlias: "ignored",
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if sec.Auth == nil || sec.Auth.ClientToken == "" || sec.Auth.LeaseDuration < 3500 || !sec.Auth.Renewable || sec.Auth.Accessor == "" {
		t.Fatalf("create answered %+v", sec.Auth)
	}
	child := f.client(t, sec.Auth.ClientToken, true)
	self, err := child.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		t.Fatalf("lookup-self: %v", err)
	}
	ttl, err := self.TokenTTL()
	if err != nil || ttl < 59*time.Minute || ttl > time.Hour {
		t.Fatalf("ttl %v %v", ttl, err)
	}
	if self.Data["type"] != "service" || self.Data["expire_time"] == nil || self.Data["creation_ttl"].(json.Number).String() != "3600" {
		t.Fatalf("lookup-self data: %v", self.Data)
	}
	if ps, _ := self.TokenPolicies(); !slices.Contains(ps, "default") {
		t.Fatalf("policies %v", ps)
	}
	if _, err := c.Auth().Token().LookupWithContext(ctx, sec.Auth.ClientToken); err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if _, err := c.Auth().Token().LookupAccessorWithContext(ctx, sec.Auth.Accessor); err != nil {
		t.Fatalf("lookup-accessor: %v", err)
	}
	renewed, err := child.Auth().Token().RenewSelfWithContext(ctx, 5400)
	if err != nil || renewed.Auth == nil || renewed.Auth.LeaseDuration > 5400 || renewed.Auth.LeaseDuration < 5300 {
		t.Fatalf("renew-self: %v %+v", err, renewed)
	}
	if _, err := c.Auth().Token().RenewWithContext(ctx, sec.Auth.ClientToken, 3600); err != nil {
		t.Fatalf("renew: %v", err)
	}
	// A token renewer as Vault Agent runs it.
	w, err := child.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: sec, Increment: 3600})
	if err != nil {
		t.Fatal(err)
	}
	go w.Start()
	select {
	case r := <-w.RenewCh():
		if r.Secret.Auth == nil {
			t.Fatal("renewal without auth")
		}
	case err := <-w.DoneCh():
		t.Fatalf("watcher stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no renewal")
	}
	w.Stop()
	if err := child.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		t.Fatalf("revoke-self: %v", err)
	}
	if _, err := child.Auth().Token().LookupSelfWithContext(ctx); statusOf(err) != http.StatusForbidden {
		t.Fatalf("lookup-self after revoke: %v", err)
	}
	other, err := c.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"default"}, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth().Token().RevokeTreeWithContext(ctx, other.Auth.ClientToken); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, err := c.Auth().Token().LookupWithContext(ctx, other.Auth.ClientToken); err == nil {
		t.Fatal("a revoked token was found")
	}
	if _, err := c.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{Type: "batch"}); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("a batch token: %v", err)
	}
}

// vaultCall sends a raw request to the Vault API and returns the status
// and the decoded body.
func (f *vaultFixture) vaultCall(t *testing.T, tok, method, path string, body any) (int, map[string]any) {
	t.Helper()
	return f.vaultCallAt(t, f.n.VaultURL(), tok, method, path, body)
}

func (f *vaultFixture) vaultCallAt(t *testing.T, base, tok, method, path string, body any) (int, map[string]any) {
	t.Helper()
	c := f.client(t, tok, false)
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("X-Vault-Token", tok)
	}
	resp, err := c.CloneConfig().HttpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %d %q", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

func TestVaultWireFormat(t *testing.T) {
	f := newVaultFixture(t)
	// Errors: Vault's document and status codes.
	for _, tc := range []struct {
		tok, method, path string
		status            int
	}{
		{"", "GET", "/v1/kv/data/x", http.StatusForbidden},
		{"cst_forged", "GET", "/v1/kv/data/x", http.StatusForbidden},
		{f.root, "GET", "/v1/kv/data/missing", http.StatusNotFound},
		{f.root, "GET", "/v1/no/such/route", http.StatusNotFound},
	} {
		status, body := f.vaultCall(t, tc.tok, tc.method, tc.path, nil)
		if _, ok := body["errors"].([]any); status != tc.status || !ok {
			t.Errorf("%s %s: %d %v", tc.method, tc.path, status, body)
		}
	}
	// Lenient decoding: unknown fields, numbers as strings; PUT is POST.
	status, _ := f.vaultCall(t, f.root, "PUT", "/v1/transit/keys/lenient", map[string]any{"type": "aes256-gcm96", "exportable": "true", "unknown_field": 1})
	if status != http.StatusOK {
		t.Fatalf("create with a string bool and an unknown field: %d", status)
	}
	status, body := f.vaultCall(t, f.root, "POST", "/v1/transit/encrypt/lenient", map[string]any{"plaintext": b64("x"), "key_version": "1", "type": "aes256-gcm96"})
	if status != http.StatusOK || !strings.HasPrefix(body["data"].(map[string]any)["ciphertext"].(string), "vault:v1:") {
		t.Fatalf("encrypt: %d %v", status, body)
	}
	for _, k := range []string{"request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth"} {
		if _, ok := body[k]; !ok {
			t.Errorf("the envelope lacks %s: %v", k, body)
		}
	}
	// The Vault request was audited as the native one is.
	waitFor(t, 10*time.Second, func() bool {
		raw, _ := os.ReadFile(filepath.Join(f.tc.cfgs[0].DataDir, "audit.log"))
		return bytes.Contains(raw, []byte(`"path":"/v1/transit/encrypt/lenient"`)) && bytes.Contains(raw, []byte(`"operation":"kms-encrypt"`))
	})
	// LIST and ?list=true.
	for _, m := range []string{"LIST", "GET", "LIST /vault"} {
		path, base := "/v1/transit/keys", f.n.VaultURL()
		switch m {
		case "GET":
			path += "?list=true"
		case "LIST /vault":
			m, base = "LIST", f.n.APIURL()+api.VaultPrefix
		}
		status, body := f.vaultCallAt(t, base, f.root, m, path, nil)
		if status != http.StatusOK || !slices.Contains(body["data"].(map[string]any)["keys"].([]any), any("lenient")) {
			t.Fatalf("%s %s: %d %v", m, path, status, body)
		}
	}
	// sys.
	c := f.client(t, "", false)
	h, err := c.Sys().Health()
	if err != nil || !h.Initialized || h.Sealed {
		t.Fatalf("health: %v %+v", err, h)
	}
	ss, err := c.Sys().SealStatus()
	if err != nil || ss.Sealed || !ss.Initialized || ss.T != 3 || ss.N != 5 {
		t.Fatalf("seal-status: %v %+v", err, ss)
	}
	ld, err := c.Sys().Leader()
	if err != nil || !ld.HAEnabled || !ld.IsSelf {
		t.Fatalf("leader: %v %+v", err, ld)
	}
	ms, err := f.client(t, f.root, false).Sys().ListMounts()
	if err != nil || ms["kv/"] == nil || ms["kv/"].Options["version"] != "2" || ms["transit/"].Type != "transit" {
		t.Fatalf("mounts: %v %+v", err, ms)
	}
	// A sealed node: 503 "Vault is sealed", and health's sealedcode.
	f.native.must("POST", "/v1/sys/seal", nil, nil)
	if status, body := f.vaultCall(t, f.root, "GET", "/v1/kv/data/x", nil); status != http.StatusServiceUnavailable || body["errors"].([]any)[0] != "Vault is sealed" {
		t.Fatalf("sealed: %d %v", status, body)
	}
	if status, _ := f.vaultCall(t, "", "GET", "/v1/sys/health?sealedcode=299", nil); status != 299 {
		t.Fatalf("health?sealedcode=299 on a sealed node: %d", status)
	}
}

func TestVaultPolicyCoversBothAPIs(t *testing.T) {
	f := newVaultFixture(t)
	ctx := context.Background()
	root := f.client(t, f.root, false)
	f.native.must("POST", "/v1/kms/keys/app", map[string]any{"type": "aes256-gcm96"}, nil)
	f.native.must("POST", "/v1/kms/keys/other", map[string]any{"type": "aes256-gcm96"}, nil)
	f.native.must("PUT", "/v1/sys/policies/app", map[string]any{"policy": map[string]any{"path": map[string]any{
		"kms/encrypt/app":         map[string]any{"capabilities": []string{"update"}},
		"secret/kv/data/app/*":    map[string]any{"capabilities": []string{"read", "update"}},
		"secret/kv/metadata/app/": map[string]any{"capabilities": []string{"list"}},
	}}}, nil)
	sec, err := root.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{Policies: []string{"app"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	tok := sec.Auth.ClientToken
	c := f.client(t, tok, false)
	native := newClient(t, f.n, f.tc.caFile)
	native.token = tok
	for _, tc := range []struct {
		vaultPath, nativePath string
		body                  any
		allowed               bool
	}{
		{"transit/encrypt/app", "/v1/kms/encrypt/app", map[string]any{"plaintext": b64("x")}, true},
		{"transit/encrypt/other", "/v1/kms/encrypt/other", map[string]any{"plaintext": b64("x")}, false},
		{"transit/decrypt/app", "/v1/kms/decrypt/app", map[string]any{"ciphertext": "vault:v1:AAAA"}, false},
		{"kv/data/app/x", "/v1/secret/kv/data/app/x", map[string]any{"data": map[string]any{"a": "b"}}, true},
		{"kv/data/db/x", "/v1/secret/kv/data/db/x", map[string]any{"data": map[string]any{"a": "b"}}, false},
	} {
		body := tc.body
		if strings.HasPrefix(tc.vaultPath, "transit/decrypt") {
			body = map[string]any{"ciphertext": "custos:v1:AAAA"}
		}
		status, code := native.do("POST", tc.nativePath, body, nil)
		_, err := c.Logical().WriteWithContext(ctx, tc.vaultPath, tc.body.(map[string]any))
		nativeDenied := status == http.StatusForbidden && code == api.CodePermissionDenied
		vaultDenied := statusOf(err) == http.StatusForbidden
		if nativeDenied == tc.allowed || vaultDenied == tc.allowed {
			t.Errorf("%s: native %d %s, vault %v; want allowed=%v", tc.vaultPath, status, code, err, tc.allowed)
		}
	}
	if _, err := c.KVv2("kv").Get(ctx, "app/x"); err != nil {
		t.Fatalf("kv get under the policy: %v", err)
	}
	if _, err := c.Logical().ListWithContext(ctx, "kv/metadata/app"); err != nil {
		t.Fatalf("list under the policy: %v", err)
	}
	if _, err := c.Logical().ListWithContext(ctx, "kv/metadata/db"); statusOf(err) != http.StatusForbidden {
		t.Fatalf("list outside the policy: %v", err)
	}
}

func b64d(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEveryVaultRouteButThePublicOnesNeedsAToken(t *testing.T) {
	f := newVaultFixture(t)
	srv, err := api.New(api.Config{Node: f.n})
	if err != nil {
		t.Fatal(err)
	}
	sec, err := f.client(t, f.root, false).Auth().Token().Create(&vault.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	selfService := map[string]bool{"/v1/auth/token/lookup-self": true, "/v1/auth/token/renew-self": true, "/v1/auth/token/revoke-self": true}
	public := 0
	for _, rt := range srv.VaultRoutes() {
		if rt.Public {
			public++
			continue
		}
		path := strings.ReplaceAll(concretePath(rt.Pattern), "*", "x1")
		toks := []string{"", "cst_forged-token-value"}
		if !selfService[rt.Pattern] && !strings.Contains(rt.Pattern, "internal/ui/mounts") {
			toks = append(toks, sec.Auth.ClientToken)
		}
		for _, tok := range toks {
			status, body := f.vaultCall(t, tok, rt.Method, path, nil)
			if _, ok := body["errors"].([]any); status != http.StatusForbidden || !ok {
				t.Errorf("%s %s with token %v: %d %v", rt.Method, rt.Pattern, tok != "", status, body)
			}
		}
	}
	if public == 0 || public > 8 {
		t.Fatalf("%d public routes", public)
	}
}

// A workload logs in with its certificate at auth/cert/login, as Vault's
// cert auth method takes it (name is the role), with the vault client.
func TestVaultCertLogin(t *testing.T) {
	f := newVaultFixture(t)
	workloadCA := testca.New(t, "workload CA")
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: workloadCA.Cert.Raw}))
	f.native.must("PUT", "/v1/auth/cert/roles/web", map[string]any{
		"ca_certificates": caPEM, "allowed_common_names": []string{"web-*"}, "policies": []string{"default"},
	}, nil)
	login := func(cn string) (*vault.Secret, error) {
		cert := workloadCA.NodeCert(t, cn)
		dir := t.TempDir()
		certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		if err := os.WriteFile(filepath.Join(dir, "c.pem"), certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "k.pem"), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := vault.DefaultConfig()
		cfg.Address, cfg.MaxRetries = f.n.VaultURL(), 0
		if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: f.tc.caFile, ClientCert: filepath.Join(dir, "c.pem"), ClientKey: filepath.Join(dir, "k.pem")}); err != nil {
			t.Fatal(err)
		}
		c, err := vault.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.ClearToken()
		return c.Logical().Write("auth/cert/login", map[string]any{"name": "web"})
	}
	sec, err := login("web-1")
	if err != nil || sec.Auth == nil || sec.Auth.ClientToken == "" || !slices.Contains(sec.Auth.Policies, "default") {
		t.Fatalf("login: %v %+v", err, sec)
	}
	if _, err := f.client(t, sec.Auth.ClientToken, false).Auth().Token().LookupSelf(); err != nil {
		t.Fatalf("the login token does not work: %v", err)
	}
	if _, err := login("db-1"); statusOf(err) != http.StatusForbidden {
		t.Fatalf("login outside the role: %v", err)
	}
}
