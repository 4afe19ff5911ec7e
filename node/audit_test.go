package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custos-pki/custos/api"
)

func TestAuditLogRecordsRequestsWithoutSecretsAndFailsClosed(t *testing.T) {
	tc := newTestCluster(t, 1)
	n := tc.nodes[0]
	c := newClient(t, n, tc.caFile)
	c.token = tc.root
	c.must("POST", "/v1/kms/keys/audited", map[string]any{}, nil)
	secret := "the plaintext nobody may log"
	var enc struct {
		Ciphertext string `json:"ciphertext"`
	}
	c.must("POST", "/v1/kms/encrypt/audited", map[string]any{"plaintext": b64(secret)}, &enc)
	var tr api.TokenResponse
	c.must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"default"}}, &tr)

	raw, err := os.ReadFile(filepath.Join(tc.cfgs[0].DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range []string{tc.root, tr.ClientToken, b64(secret), secret, enc.Ciphertext} {
		if bytes.Contains(raw, []byte(needle)) {
			t.Fatalf("the audit log holds a secret in plain text (%d bytes)", len(needle))
		}
	}
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct {
			Type, Path string
			Auth       *struct{ Accessor string }
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line is not JSON: %v", err)
		}
		if e.Path == "/v1/kms/encrypt/audited" {
			if e.Auth == nil || e.Auth.Accessor == "" {
				t.Fatal("an authenticated request was logged without its accessor")
			}
			paths = append(paths, e.Type)
		}
	}
	if strings.Join(paths, ",") != "request,response" {
		t.Fatalf("encrypt was logged as %v, want a request and a response entry", paths)
	}

	// With the audit log gone, requests fail instead of going unrecorded.
	svc, err := n.Services()
	if err != nil {
		t.Fatal(err)
	}
	svc.Audit.Close()
	if status, code := c.do("POST", "/v1/kms/encrypt/audited", map[string]any{"plaintext": b64(secret)}, nil); status != http.StatusInternalServerError || code != api.CodeInternal {
		t.Fatalf("with a closed audit log: %d %s", status, code)
	}
}
