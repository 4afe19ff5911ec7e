package stepca

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/custos-pki/custos/kms"
	"go.step.sm/crypto/jose"
)

// TestJWKProvisionerStore: JWK provisioners are stored with their policy
// normalized and their key encrypted under the password (never the
// password itself), share one namespace with ACME provisioners, are
// served by another node at /provisioners and /provisioners/<kid>/
// encrypted-key, and go away when deleted.
func TestJWKProvisionerStore(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const pw = "correct horse battery staple"
	p, err := e.srv.CreateJWKProvisioner(ctx, JWKProvisioner{Name: "ops", AllowedNames: []string{".svc.example.com"}, MaxLifetime: 24 * time.Hour}, []byte(pw))
	if err != nil {
		t.Fatal(err)
	}
	if p.KeyID() == "" || p.EncryptedKey == "" || len(p.KeyTypes) == 0 {
		t.Fatalf("stored provisioner: %+v", p)
	}
	if _, err := jose.Decrypt([]byte(p.EncryptedKey), jose.WithPassword([]byte(pw))); err != nil {
		t.Fatalf("the key does not decrypt with the password: %v", err)
	}
	raw, err := e.b.Get(ctx, JWKTable, []byte("ops"))
	if err != nil {
		t.Fatal(err)
	}
	if containsBytes(raw, pw) || containsBytes(raw, `"d":`) {
		t.Fatal("the stored record holds the password or a plain private key")
	}

	for name, tc := range map[string]struct {
		p    JWKProvisioner
		pw   string
		want error
	}{
		"short password": {JWKProvisioner{Name: "x"}, "1234567", kms.ErrInvalid},
		"bad name":       {JWKProvisioner{Name: "Bad/Name"}, pw, kms.ErrInvalid},
		"bad entry":      {JWKProvisioner{Name: "x", AllowedNames: []string{"a..b"}}, pw, kms.ErrInvalid},
		"long lifetime":  {JWKProvisioner{Name: "x", MaxLifetime: 10000 * time.Hour}, pw, kms.ErrInvalid},
		"ACME name":      {JWKProvisioner{Name: "acme"}, pw, kms.ErrConflict},
		"same name":      {JWKProvisioner{Name: "ops"}, pw, kms.ErrConflict},
	} {
		if _, err := e.srv.CreateJWKProvisioner(ctx, tc.p, []byte(tc.pw)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if _, err := e.srv.CreateACMEProvisioner(ctx, ACMEProvisioner{Name: "ops"}); !errors.Is(err, kms.ErrConflict) {
		t.Errorf("an ACME provisioner named as a JWK one: %v, want conflict", err)
	}

	// Another node serves it to step's CLI.
	_, ts2 := e.start(t, e.cfg)
	get := func(path string) (int, []byte) {
		resp, err := ts2.Client().Get(ts2.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	st, body := get("/provisioners/" + p.KeyID() + "/encrypted-key")
	var key struct {
		Key string `json:"key"`
	}
	if st != 200 || json.Unmarshal(body, &key) != nil || key.Key != p.EncryptedKey {
		t.Fatalf("encrypted key on another node: %d %s", st, body)
	}

	if err := e.srv.DeleteJWKProvisioner(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.DeleteJWKProvisioner(ctx, "ops"); !errors.Is(err, kms.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
	if st, _ := get("/provisioners/" + p.KeyID() + "/encrypted-key"); st != 404 {
		t.Errorf("encrypted key of a deleted provisioner: %d, want 404", st)
	}
	if list, err := e.srv.JWKProvisioners(ctx); err != nil || len(list) != 0 {
		t.Errorf("after delete: %v, %v", list, err)
	}
}

func containsBytes(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }

// FuzzSignGate: the unverified parts of a /sign request the gate reads
// (the token's issuer, the CSR) never panic, whatever they hold.
func FuzzSignGate(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJvcHMifQ.c2ln", "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n")
	f.Add("a.b.c", "")
	f.Add("", "not pem")
	f.Fuzz(func(t *testing.T, tok, csr string) {
		if name, ok := tokenIssuer(tok); ok && name == "" {
			t.Fatal("an empty issuer reported as found")
		}
		_ = signCSR(csr)
	})
}
