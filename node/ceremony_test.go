package node

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/custos-pki/custos/api"
)

// ceremonyPaths are the init and update paths of a ceremony.
var ceremonyPaths = map[string][2]string{
	api.CeremonyGenerateRoot: {"/v1/sys/generate-root/attempt", "/v1/sys/generate-root/update"},
	api.CeremonyRekey:        {"/v1/sys/rekey/init", "/v1/sys/rekey/update"},
	api.CeremonyRotateRoot:   {"/v1/sys/rotate-root/init", "/v1/sys/rotate-root/update"},
}

func wantStatus(t *testing.T, what string, status int, code string, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus || code != wantCode {
		t.Fatalf("%s: %d %s, want %d %s", what, status, code, wantStatus, wantCode)
	}
}

// checkCeremonyGuards runs the refusals every ceremony must make, against
// one in progress under nonce, and leaves it with one share given.
func checkCeremonyGuards(t *testing.T, c *client, kind, nonce string, keys []string) {
	t.Helper()
	initPath, updatePath := ceremonyPaths[kind][0], ceremonyPaths[kind][1]
	var st api.CeremonyStatus
	c.must("GET", initPath, nil, &st)
	if !st.Started || st.Nonce != "" || st.Progress != 0 {
		t.Fatalf("status shows %+v; the nonce must not be in it", st)
	}
	status, code := c.do("POST", initPath, api.CeremonyRequest{OTP: newOTP(t), SecretShares: 3, SecretThreshold: 2}, nil)
	wantStatus(t, "another init with fields of all kinds", status, code, http.StatusBadRequest, api.CodeInvalidArgument)
	status, code = c.do("POST", updatePath, api.CeremonyRequest{Key: keys[0]}, nil)
	wantStatus(t, "share without a nonce", status, code, http.StatusBadRequest, api.CodeInvalidArgument)
	status, code = c.do("POST", updatePath, api.CeremonyRequest{Nonce: strings.Repeat("0", len(nonce)), Key: keys[0]}, nil)
	wantStatus(t, "share with a wrong nonce", status, code, http.StatusForbidden, api.CodePermissionDenied)
	c.must("POST", updatePath, api.CeremonyRequest{Nonce: nonce, Key: keys[0]}, &st)
	if st.Progress != 1 || st.Complete {
		t.Fatalf("after one share: %+v", st)
	}
	status, code = c.do("POST", updatePath, api.CeremonyRequest{Nonce: nonce, Key: keys[0]}, nil)
	wantStatus(t, "the same share twice", status, code, http.StatusBadRequest, api.CodeInvalidArgument)
	status, code = c.do("DELETE", initPath, nil, nil)
	wantStatus(t, "cancel without a nonce", status, code, http.StatusBadRequest, api.CodeInvalidArgument)
	status, code = c.do("DELETE", initPath, api.CeremonyRequest{Nonce: "not-the-nonce"}, nil)
	wantStatus(t, "cancel with a wrong nonce", status, code, http.StatusForbidden, api.CodePermissionDenied)
	st = api.CeremonyStatus{}
	c.must("GET", initPath, nil, &st)
	if !st.Started || st.Progress != 1 || st.Nonce != "" {
		t.Fatalf("the refused calls changed the ceremony: %+v", st)
	}
}

func newOTP(t *testing.T) string {
	b := make([]byte, rootTokenLen)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func TestGenerateRootCeremonyNeedsTheNonceAndHidesTheToken(t *testing.T) {
	tc := newTestCluster(t, 1)
	anon := newClient(t, tc.nodes[0], tc.caFile)
	status, code := anon.do("POST", "/v1/sys/generate-root/update", api.CeremonyRequest{Nonce: "x", Key: tc.keys[0]}, nil)
	wantStatus(t, "share without a ceremony", status, code, http.StatusNotFound, api.CodeNotFound)
	status, code = anon.do("POST", "/v1/sys/generate-root/attempt", api.CeremonyRequest{OTP: base64.StdEncoding.EncodeToString([]byte("short"))}, nil)
	wantStatus(t, "init with a short OTP", status, code, http.StatusBadRequest, api.CodeInvalidArgument)

	otp := newOTP(t)
	var st api.CeremonyStatus
	anon.must("POST", "/v1/sys/generate-root/attempt", api.CeremonyRequest{OTP: otp}, &st)
	if len(st.Nonce) < 32 || st.Required != 3 || st.OTPLength != rootTokenLen {
		t.Fatalf("init answer: %+v", st)
	}
	nonce := st.Nonce
	status, code = anon.do("POST", "/v1/sys/generate-root/attempt", api.CeremonyRequest{OTP: otp}, nil)
	wantStatus(t, "init while one is in progress", status, code, http.StatusConflict, api.CodeConflict)
	checkCeremonyGuards(t, anon, api.CeremonyGenerateRoot, nonce, tc.keys)

	anon.must("POST", "/v1/sys/generate-root/update", api.CeremonyRequest{Nonce: nonce, Key: tc.keys[1]}, &st)
	raw := rawPost(t, anon, "/v1/sys/generate-root/update", api.CeremonyRequest{Nonce: nonce, Key: tc.keys[2]})
	if bytes.Contains(raw, []byte("cst_")) {
		t.Fatal("the answer holds a root token in the clear")
	}
	if err := json.Unmarshal(raw, &st); err != nil || !st.Complete || st.EncodedToken == "" {
		t.Fatalf("final answer: %s, %v", raw, err)
	}
	// The encoded token is no token; decoded with the OTP it is a root token.
	enc, err := base64.StdEncoding.DecodeString(st.EncodedToken)
	if err != nil {
		t.Fatal(err)
	}
	pad, _ := base64.StdEncoding.DecodeString(otp)
	guess := newClient(t, tc.nodes[0], tc.caFile)
	guess.token = st.EncodedToken
	status, code = guess.do("GET", "/v1/auth/token/lookup-self", nil, nil)
	wantStatus(t, "the encoded token", status, code, http.StatusForbidden, api.CodePermissionDenied)
	subtle.XORBytes(enc, enc, pad)
	root := newClient(t, tc.nodes[0], tc.caFile)
	root.token = string(enc)
	var self api.TokenResponse
	root.must("GET", "/v1/auth/token/lookup-self", nil, &self)
	if len(self.Policies) != 1 || self.Policies[0] != "root" {
		t.Fatalf("decoded token has policies %v", self.Policies)
	}
	var after api.CeremonyStatus
	anon.must("GET", "/v1/sys/generate-root/attempt", nil, &after)
	if after.Started || after.EncodedToken != "" || after.Nonce != "" {
		t.Fatalf("status after completion: %+v", after)
	}
	// The nonce died with the ceremony.
	status, code = anon.do("POST", "/v1/sys/generate-root/update", api.CeremonyRequest{Nonce: nonce, Key: tc.keys[0]}, nil)
	wantStatus(t, "share after completion", status, code, http.StatusNotFound, api.CodeNotFound)
	// The audit log has neither the token nor the OTP.
	auditRaw, err := os.ReadFile(filepath.Join(tc.cfgs[0].DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, needle := range []string{string(enc), otp, st.EncodedToken, nonce, tc.keys[1]} {
		if bytes.Contains(auditRaw, []byte(needle)) {
			t.Fatal("the audit log holds a ceremony secret in the clear")
		}
	}
	// Cancel with the nonce ends a ceremony.
	anon.must("POST", "/v1/sys/generate-root/attempt", api.CeremonyRequest{OTP: newOTP(t)}, &st)
	anon.must("DELETE", "/v1/sys/generate-root/attempt", api.CeremonyRequest{Nonce: st.Nonce}, nil)
	anon.must("GET", "/v1/sys/generate-root/attempt", nil, &st)
	if st.Started {
		t.Fatal("cancel with the nonce left the ceremony running")
	}
}

// rawPost returns the body of a 200 answer.
func rawPost(t *testing.T, c *client, path string, body any) []byte {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", c.base+path, bytes.NewReader(b))
	if c.token != "" {
		req.Header.Set(api.TokenHeader, c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", path, resp.StatusCode, raw)
	}
	return raw
}

func TestRekeyCeremonyGivesSharesOnlyToTheFinalNonceHolder(t *testing.T) {
	tc := newTestCluster(t, 1)
	n := tc.nodes[0]
	c := newClient(t, n, tc.caFile)
	c.token = tc.root
	ids := make([]*age.X25519Identity, 3)
	var recipients []string
	for i := range ids {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		ids[i], recipients = id, append(recipients, id.Recipient().String())
	}
	status, code := c.do("POST", "/v1/sys/rekey/init", api.CeremonyRequest{SecretShares: 3, SecretThreshold: 2, Recipients: recipients[:2]}, nil)
	wantStatus(t, "fewer recipients than shares", status, code, http.StatusBadRequest, api.CodeInvalidArgument)
	var st api.CeremonyStatus
	c.must("POST", "/v1/sys/rekey/init", api.CeremonyRequest{SecretShares: 3, SecretThreshold: 2, Recipients: recipients}, &st)
	nonce := st.Nonce
	if len(nonce) < 32 || st.SecretShares != 3 {
		t.Fatalf("init answer: %+v", st)
	}
	checkCeremonyGuards(t, c, api.CeremonyRekey, nonce, tc.keys)
	c.must("POST", "/v1/sys/rekey/update", api.CeremonyRequest{Nonce: nonce, Key: tc.keys[1]}, &st)
	if st.Complete || len(st.Keys)+len(st.KeysEncrypted) != 0 {
		t.Fatalf("before the last share: %+v", st)
	}
	c.must("POST", "/v1/sys/rekey/update", api.CeremonyRequest{Nonce: nonce, Key: tc.keys[2]}, &st)
	if !st.Complete || len(st.Keys) != 0 || len(st.KeysEncrypted) != 3 {
		t.Fatalf("final answer: complete %v, %d clear keys, %d encrypted", st.Complete, len(st.Keys), len(st.KeysEncrypted))
	}
	var after api.CeremonyStatus
	c.must("GET", "/v1/sys/rekey/init", nil, &after)
	if after.Started || len(after.Keys)+len(after.KeysEncrypted) != 0 {
		t.Fatalf("status after completion: %+v", after)
	}
	// Each holder opens their own share, and two of them unseal.
	var shares []string
	for i, ct := range st.KeysEncrypted {
		r, err := age.Decrypt(armor.NewReader(strings.NewReader(ct)), ids[i])
		if err != nil {
			t.Fatalf("share %d: %v", i, err)
		}
		b, _ := io.ReadAll(r)
		shares = append(shares, string(b))
	}
	if _, err := age.Decrypt(armor.NewReader(strings.NewReader(st.KeysEncrypted[0])), ids[1]); err == nil {
		t.Fatal("share 1 opened with holder 2's key")
	}
	c.must("POST", "/v1/sys/seal", nil, nil)
	anon := newClient(t, n, tc.caFile)
	var seal api.SealStatus
	anon.must("POST", "/v1/sys/unseal", api.UnsealRequest{Key: tc.keys[0]}, &seal)
	status, code = anon.do("POST", "/v1/sys/unseal", api.UnsealRequest{Key: tc.keys[1]}, &seal)
	wantStatus(t, "unseal with the old shares", status, code, http.StatusForbidden, api.CodePermissionDenied)
	anon.must("POST", "/v1/sys/unseal", api.UnsealRequest{Key: shares[0]}, &seal)
	anon.must("POST", "/v1/sys/unseal", api.UnsealRequest{Key: shares[2]}, &seal)
	if seal.Sealed || seal.Threshold != 2 {
		t.Fatalf("after two new shares: %+v", seal)
	}
	// Without recipients the shares come back in the clear, to the last
	// share's caller only; cancel needs the nonce.
	c.must("POST", "/v1/sys/rekey/init", api.CeremonyRequest{SecretShares: 2, SecretThreshold: 2}, &st)
	status, code = c.do("DELETE", "/v1/sys/rekey/init", api.CeremonyRequest{}, nil)
	wantStatus(t, "cancel without a nonce", status, code, http.StatusBadRequest, api.CodeInvalidArgument)
	c.must("POST", "/v1/sys/rekey/update", api.CeremonyRequest{Nonce: st.Nonce, Key: shares[1]}, nil)
	c.must("POST", "/v1/sys/rekey/update", api.CeremonyRequest{Nonce: st.Nonce, Key: shares[0]}, &st)
	if !st.Complete || len(st.Keys) != 2 {
		t.Fatalf("rekey without recipients: %+v", st)
	}
}

func TestBarrierRotationOverTheAPI(t *testing.T) {
	tc := newTestCluster(t, 1)
	n := tc.nodes[0]
	c := newClient(t, n, tc.caFile)
	c.token = tc.root
	var ks api.KeyStatus
	c.must("GET", "/v1/sys/key-status", nil, &ks)
	if ks.Term != 1 || ks.Encryptions == 0 || ks.MaxEncryptions != 1<<30 || ks.Interval != "720h0m0s" || ks.InstallTime.IsZero() {
		t.Fatalf("key status: %+v", ks)
	}
	var tr api.TokenResponse
	c.must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"}, &tr)
	c.must("POST", "/v1/sys/rotate", nil, &ks)
	if ks.Term != 2 || ks.Terms != 2 {
		t.Fatalf("after rotate: %+v", ks)
	}
	// Values under term 1 still decrypt; new ones go under term 2.
	var self api.TokenResponse
	o := newClient(t, n, tc.caFile)
	o.token = tr.ClientToken
	o.must("GET", "/v1/auth/token/lookup-self", nil, &self)
	c.must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"}, &tr)
	c.must("GET", "/v1/sys/key-status", nil, &ks)
	if ks.Term != 2 || ks.Encryptions == 0 {
		t.Fatalf("key status after a write: %+v", ks)
	}
	// A token without sudo may not rotate.
	o.token = tr.ClientToken
	status, code := o.do("POST", "/v1/sys/rotate", nil, nil)
	wantStatus(t, "rotate without sudo", status, code, http.StatusForbidden, api.CodePermissionDenied)

	// Rotation config: bad values change nothing.
	for _, bad := range []api.RotationConfig{{MaxEncryptions: 10, Interval: "0s"}, {MaxEncryptions: 1 << 32, Interval: "0s"}, {MaxEncryptions: 1 << 30, Interval: "1h"}, {MaxEncryptions: 1 << 30, Interval: "soon"}} {
		status, code := c.do("POST", "/v1/sys/rotate/config", bad, nil)
		wantStatus(t, "bad rotation config", status, code, http.StatusBadRequest, api.CodeInvalidArgument)
	}
	var rc api.RotationConfig
	c.must("POST", "/v1/sys/rotate/config", api.RotationConfig{MaxEncryptions: 1 << 24, Interval: "0s"}, &rc)
	c.must("GET", "/v1/sys/rotate/config", nil, &rc)
	if rc.MaxEncryptions != 1<<24 || rc.Interval != "0s" {
		t.Fatalf("rotation config: %+v", rc)
	}

	// rotate-root is a ceremony: the root key changes, the shares stay.
	var st api.CeremonyStatus
	c.must("POST", "/v1/sys/rotate-root/init", api.CeremonyRequest{}, &st)
	checkCeremonyGuards(t, c, api.CeremonyRotateRoot, st.Nonce, tc.keys)
	c.must("POST", "/v1/sys/rotate-root/update", api.CeremonyRequest{Nonce: st.Nonce, Key: tc.keys[3]}, nil)
	c.must("POST", "/v1/sys/rotate-root/update", api.CeremonyRequest{Nonce: st.Nonce, Key: tc.keys[4]}, &st)
	if !st.Complete || st.RootGeneration != 2 {
		t.Fatalf("rotate-root: %+v", st)
	}
	c.must("POST", "/v1/sys/seal", nil, nil)
	tc.unseal(t, 0)
	o.must("GET", "/v1/auth/token/lookup-self", nil, &self)

	// Every change is in the audit log.
	raw, err := os.ReadFile(filepath.Join(tc.cfgs[0].DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e struct{ Type, Operation string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == "response" {
			seen[e.Operation] = true
		}
	}
	for _, op := range []string{"rotate", "rotate-config-write", "rotate-root-init", "rotate-root-update", "key-status"} {
		if !seen[op] {
			t.Errorf("no audit entry for %s", op)
		}
	}
}

// TestIdleCeremonyEnds: a ceremony whose nonce was lost, or that someone
// else started, blocks the next one for an hour at most.
func TestIdleCeremonyEnds(t *testing.T) {
	tc := newTestCluster(t, 1)
	n := tc.nodes[0]
	var fake atomic.Int64
	fake.Store(time.Now().UnixNano())
	advance := func(d time.Duration) { fake.Add(int64(d)) }
	n.cer.mu.Lock()
	n.cer.now = func() time.Time { return time.Unix(0, fake.Load()) }
	n.cer.mu.Unlock()
	c := newClient(t, n, tc.caFile)
	var st api.CeremonyStatus
	c.must("POST", "/v1/sys/generate-root/attempt", api.CeremonyRequest{OTP: newOTP(t)}, &st)
	nonce := st.Nonce
	advance(ceremonyIdle - time.Minute)
	c.must("POST", "/v1/sys/generate-root/update", api.CeremonyRequest{Nonce: nonce, Key: tc.keys[0]}, &st)
	advance(ceremonyIdle - time.Minute) // a share keeps it alive
	status, code := c.do("POST", "/v1/sys/generate-root/attempt", api.CeremonyRequest{OTP: newOTP(t)}, nil)
	wantStatus(t, "init while one is alive", status, code, http.StatusConflict, api.CodeConflict)
	advance(2 * time.Minute)
	c.must("POST", "/v1/sys/generate-root/attempt", api.CeremonyRequest{OTP: newOTP(t)}, &st)
	if st.Nonce == nonce || st.Progress != 0 {
		t.Fatalf("new ceremony: %+v", st)
	}
	status, code = c.do("POST", "/v1/sys/generate-root/update", api.CeremonyRequest{Nonce: nonce, Key: tc.keys[1]}, nil)
	wantStatus(t, "the old nonce", status, code, http.StatusForbidden, api.CodePermissionDenied)
}

// TestBarrierRotationAcrossNodes: a rotation made through one node is the
// term every node seals under, and the use count of a term adds up what
// every node reserved.
func TestBarrierRotationAcrossNodes(t *testing.T) {
	tc := newTestCluster(t, 3)
	clients := make([]*client, 3)
	for i, n := range tc.nodes {
		clients[i] = newClient(t, n, tc.caFile)
		clients[i].token = tc.root
	}
	var ks api.KeyStatus
	clients[1].must("POST", "/v1/sys/rotate", nil, &ks)
	if ks.Term != 2 {
		t.Fatalf("rotate through node 2: %+v", ks)
	}
	// Every node follows the rotation when it reloads the keyring (key-status
	// does, and every node does it each minute).
	for i := range clients {
		ks = api.KeyStatus{}
		clients[i].must("GET", "/v1/sys/key-status", nil, &ks)
		if ks.Term != 2 || ks.Terms != 2 {
			t.Fatalf("node %d key status: %+v", i+1, ks)
		}
	}
	var tr api.TokenResponse
	for i := range clients {
		clients[i].must("POST", "/v1/auth/token/create", api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"}, &tr)
	}
	for i := range clients {
		ks = api.KeyStatus{}
		clients[i].must("GET", "/v1/sys/key-status", nil, &ks)
		// Each node that sealed under term 2 reserved its own block, and
		// the count is their sum.
		if ks.Encryptions < 3*maxBlock() {
			t.Fatalf("node %d: %d encryptions counted under term 2, want at least %d", i+1, ks.Encryptions, 3*maxBlock())
		}
	}
}

// maxBlock is how many encryptions a node reserves at a time under the
// default rotation config.
func maxBlock() uint64 { return 1 << 16 }
