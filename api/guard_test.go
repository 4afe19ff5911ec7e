package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/secrets"
)

// hookKeys is the real key manager with a hook that runs, once, when a
// write asks for its data key: after the request was authorised, before
// its transaction commits.
type hookKeys struct {
	secrets.KeyManager
	mu   sync.Mutex
	hook func()
}

func (k *hookKeys) set(fn func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hook = fn
}

func (k *hookKeys) GenerateDataKey(ctx context.Context, name string, bits int, withPlaintext bool, o kms.CryptOptions) (kms.DataKey, error) {
	k.mu.Lock()
	fn := k.hook
	k.hook = nil
	k.mu.Unlock()
	if fn != nil {
		fn()
	}
	return k.KeyManager.GenerateDataKey(ctx, name, bits, withPlaintext, o)
}

type guardFixture struct {
	*secFixture
	keys *hookKeys
}

func newGuardFixture(t *testing.T) *guardFixture {
	t.Helper()
	keys := &hookKeys{}
	f := &guardFixture{keys: keys}
	f.secFixture = &secFixture{newTestStack(t, stackOptions{withSecrets: true, keys: func(k secrets.KeyManager) secrets.KeyManager {
		keys.KeyManager = k
		return keys
	}})}
	f.ok(t, "POST", "/v1/sys/mounts/kv", SecretMountRequest{}, nil)
	f.policy(t, "app", `{"path":{"secret/kv/data/*":{"capabilities":["update"]},"secret/kv/metadata/*":{"capabilities":["delete"]}}}`)
	return f
}

func (f *guardFixture) policy(t *testing.T, name, doc string) {
	t.Helper()
	if err := f.auth.WritePolicy(context.Background(), name, []byte(doc)); err != nil {
		t.Fatal(err)
	}
}

func (f *guardFixture) token(t *testing.T, uses int) string {
	t.Helper()
	tok, _, err := f.auth.CreateToken(context.Background(), f.root, auth.TokenRequest{Policies: []string{"app"}, TTL: time.Hour, NumUses: uses})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// versions is the secret's current version, 0 when there is none.
func (f *guardFixture) versions(t *testing.T, path string) int {
	t.Helper()
	md, err := f.secrets.ReadMetadata(context.Background(), "kv", path)
	if err != nil {
		return 0
	}
	return md.CurrentVersion
}

// A write authorised from this node's state commits only if its token
// and policies are unchanged at the commit: a revocation or a narrowed
// policy that lands between the decision and the commit refuses it with
// 403 and changes nothing, on the native and the Vault routes; a policy
// change that still allows it is confirmed and the write commits once.
func TestWriteIsAuthorisedAtItsCommit(t *testing.T) {
	f := newGuardFixture(t)
	ctx := context.Background()
	for _, route := range []struct{ name, method, path, body string }{
		{"native", "POST", "/v1/secret/kv/data/", write(`{"v":1}`)},
		{"vault", "PUT", VaultPrefix + "/v1/kv/data/", write(`{"v":1}`)},
	} {
		t.Run(route.name+"/revoked", func(t *testing.T) {
			tok := f.token(t, 0)
			f.keys.set(func() {
				if err := f.auth.Revoke(ctx, tok); err != nil {
					t.Error(err)
				}
			})
			path := "revoked-" + route.name
			f.want(t, tok, route.method, route.path+path, route.body, http.StatusForbidden, wantCode(route.name, CodePermissionDenied))
			if v := f.versions(t, path); v != 0 {
				t.Fatalf("the refused write made version %d", v)
			}
		})
		t.Run(route.name+"/narrowed", func(t *testing.T) {
			tok := f.token(t, 0)
			f.keys.set(func() { f.policy(t, "app", `{"path":{"secret/kv/data/*":{"capabilities":["read"]}}}`) })
			defer f.policy(t, "app", `{"path":{"secret/kv/data/*":{"capabilities":["update"]},"secret/kv/metadata/*":{"capabilities":["delete"]}}}`)
			path := "narrowed-" + route.name
			f.want(t, tok, route.method, route.path+path, route.body, http.StatusForbidden, wantCode(route.name, CodePermissionDenied))
			if v := f.versions(t, path); v != 0 {
				t.Fatalf("the refused write made version %d", v)
			}
		})
		t.Run(route.name+"/still-allowed", func(t *testing.T) {
			tok := f.token(t, 0)
			f.keys.set(func() { f.policy(t, "other", `{"path":{"x":{"capabilities":["read"]}}}`) })
			path := "allowed-" + route.name
			if status, raw := f.call(t, tok, route.method, route.path+path, route.body, nil); status != http.StatusOK {
				t.Fatalf("%d %s", status, raw)
			}
			if v := f.versions(t, path); v != 1 {
				t.Fatalf("version %d, want 1", v)
			}
		})
	}
	// Deleting the metadata is guarded the same way.
	tok := f.token(t, 0)
	f.ok(t, "POST", "/v1/secret/kv/data/kept", write(`{"v":1}`), nil)
	if err := f.auth.Revoke(ctx, tok); err != nil {
		t.Fatal(err)
	}
	f.want(t, tok, "DELETE", "/v1/secret/kv/metadata/kept", nil, http.StatusForbidden, CodePermissionDenied)
	if v := f.versions(t, "kept"); v != 1 {
		t.Fatalf("version %d after a refused delete", v)
	}
}

func wantCode(route, code string) string {
	if route == "vault" {
		return "" // Vault's error document has no code
	}
	return code
}

// A write refused at its commit is audited as every request is: its
// request entry before the handler ran, its response entry with the 403.
func TestWriteRefusedAtCommitIsAudited(t *testing.T) {
	f := newGuardFixture(t)
	tok := f.token(t, 0)
	f.keys.set(func() {
		if err := f.auth.Revoke(context.Background(), tok); err != nil {
			t.Error(err)
		}
	})
	f.want(t, tok, "POST", "/v1/secret/kv/data/audited", write(`{"v":1}`), http.StatusForbidden, CodePermissionDenied)
	raw, err := os.ReadFile(f.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		var e struct {
			Type   string `json:"type"`
			Path   string `json:"path"`
			Status int    `json:"status"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.Path == "/v1/secret/kv/data/audited" {
			got = append(got, e.Type+" "+http.StatusText(e.Status))
		}
	}
	if len(got) != 2 || got[0] != "request " || got[1] != "response Forbidden" {
		t.Fatalf("audit entries: %q", got)
	}
}

// Errors from this node's state are answered only once the token is
// confirmed on current state: a revoked token learns nothing about a
// mount or a version, and gets 403.
func TestErrorsOfAWriteAreConfirmed(t *testing.T) {
	f := newGuardFixture(t)
	f.ok(t, "POST", "/v1/secret/kv/data/a", write(`{"v":1}`), nil)
	tok := f.token(t, 0)
	f.want(t, tok, "POST", "/v1/secret/kv/data/a", write(`{"v":2}`, 7), http.StatusConflict, CodeConflict)
	revoke := func() {
		if err := f.auth.Revoke(context.Background(), tok); err != nil {
			t.Error(err)
		}
	}
	f.keys.set(revoke) // never reached: the error comes before the seal
	f.want(t, tok, "POST", "/v1/secret/kv/data/a", write(`{"v":2}`, 7), http.StatusConflict, CodeConflict)
	revoke()
	f.keys.set(nil)
	f.want(t, tok, "POST", "/v1/secret/kv/data/a", write(`{"v":2}`, 7), http.StatusForbidden, CodePermissionDenied)
	f.want(t, tok, "POST", "/v1/secret/kv/data/a", write(`{"v":2}`), http.StatusForbidden, CodePermissionDenied)
}

// A limited-use token is checked as before, spending one use per request.
func TestLimitedUseTokenSpendsOneUsePerWrite(t *testing.T) {
	f := newGuardFixture(t)
	tok := f.token(t, 2)
	f.want(t, tok, "POST", "/v1/secret/kv/data/l", write(`{"v":1}`), http.StatusOK, "")
	f.want(t, tok, "POST", "/v1/secret/kv/data/l", write(`{"v":2}`), http.StatusOK, "")
	f.want(t, tok, "POST", "/v1/secret/kv/data/l", write(`{"v":3}`), http.StatusForbidden, CodePermissionDenied)
	if v := f.versions(t, "l"); v != 2 {
		t.Fatalf("version %d, want 2", v)
	}
}
