package cli

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/raftstore"
)

var testTime = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func healthyNode(f *fakeAPI) {
	f.reply("GET /v1/sys/health", http.StatusOK, api.Health{
		Initialized: true, HasLeader: true, NodeID: "n1", LeaderID: "n1", Version: "1.0.0", ServerTime: testTime,
	})
	f.reply("GET /v1/sys/seal-status", http.StatusOK, api.SealStatus{
		Initialized: true, Type: "shamir", Shares: 5, Threshold: 3, NodeID: "n1",
	})
	f.reply("GET /v1/sys/raft/peers", http.StatusOK, api.RaftStatus{
		ID: "n1", Addr: "10.0.0.1:8444", State: "Leader", LeaderID: "n1", Term: 7, AppliedIndex: 42,
		Peers: []raftstore.Peer{
			{ID: "n1", Addr: "10.0.0.1:8444", Voter: true, Leader: true, Healthy: true},
			{ID: "n2", Addr: "10.0.0.2:8444", Voter: true, Healthy: true, LastContact: testTime},
		},
	})
}

func TestStatus(t *testing.T) {
	f := newFakeAPI(t)
	healthyNode(f)

	// Without a token the peers are not asked for.
	r := f.run("", "status").wantCode(t, 0)
	if len(f.requests("GET /v1/sys/raft/peers")) != 0 || strings.Contains(r.stdout, "10.0.0.2") {
		t.Fatalf("peers without a token:\n%s", r.stdout)
	}
	checkGolden(t, "status.txt", f.scrub(r.stdout))

	r = f.run("", "--token", "tok", "status").wantCode(t, 0)
	checkGolden(t, "status-token.txt", f.scrub(r.stdout))

	r = f.run("", "--token", "tok", "-o", "json", "status").wantCode(t, 0)
	var got statusResult
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got.Raft == nil || len(got.Raft.Peers) != 2 || got.Health.NodeID != "n1" || got.SealStatus.Threshold != 3 {
		t.Fatalf("json status: %+v", got)
	}
}

func TestStatusSealedNode(t *testing.T) {
	f := newFakeAPI(t)
	// A sealed node answers health with 503 and refuses the peers: status
	// still reports, with the reason.
	f.reply("GET /v1/sys/health", http.StatusServiceUnavailable, api.Health{Initialized: true, Sealed: true, NodeID: "n2", ServerTime: testTime})
	f.reply("GET /v1/sys/seal-status", http.StatusOK, api.SealStatus{Initialized: true, Sealed: true, Type: "shamir", Shares: 5, Threshold: 3, Progress: 1, NodeID: "n2"})
	f.reply("GET /v1/sys/raft/peers", http.StatusServiceUnavailable, apiErrorDoc(api.CodeSealed, "custos is sealed"))
	r := f.run("", "--token", "tok", "status").wantCode(t, 0)
	for _, want := range []string{"Sealed           true", "Unseal progress  1/3", "unavailable: custos is sealed (code sealed, request req-1)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("missing %q in\n%s", want, r.stdout)
		}
	}
}

func TestErrorRendering(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("GET /v1/sys/policies/nope", http.StatusNotFound, apiErrorDoc(api.CodeNotFound, `auth: not found: policy "nope"`))
	r := f.run("", "--token", "tok", "policy", "read", "nope").wantCode(t, 1)
	if want := "Error: auth: not found: policy \"nope\" (code not_found, request req-1)\n"; r.stderr != want || r.stdout != "" {
		t.Fatalf("stderr %q, stdout %q; want stderr %q", r.stderr, r.stdout, want)
	}
	// -o json does not change how errors print.
	r = f.run("", "--token", "tok", "-o", "json", "policy", "read", "nope").wantCode(t, 1)
	if !strings.HasPrefix(r.stderr, "Error: auth: not found") || r.stdout != "" {
		t.Fatalf("json mode error: %+v", r)
	}
	// Unreachable server: exit 1.
	r = runCLI(t, testDeps(), "", "--addr", "https://127.0.0.1:1", "status").wantCode(t, 1)
	if !strings.HasPrefix(r.stderr, "Error: ") {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	f := newFakeAPI(t)
	for _, args := range [][]string{
		{"bogus"},
		{"kms", "bogus"},
		{"status", "extra"},
		{"status", "--no-such-flag"},
		{"-o", "yaml", "status"},
		{"kms", "encrypt"},
		{"kms", "encrypt", "k"},
		{"kms", "encrypt", "k", "a", "--file", "x"},
		{"kms", "encrypt", "k", "a", "--input-encoding", "rot13"},
		{"kms", "key", "config", "k"},
		{"kms", "verify", "k", "data"},
		{"kms", "verify", "k", "data", "--signature", "s", "--hmac", "h"},
		{"kms", "verify", "k", "data", "--hmac", "h", "--prehashed"},
		{"token", "revoke"},
		{"token", "revoke", "--self", "--accessor", "a"},
		{"token", "lookup", "t", "--accessor", "a"},
		{"token", "create", "--meta", "novalue"},
		{"operator", "unseal", "--reset", "share"},
		{"operator", "init", "--key-shares", "five"},
		{"policy", "write", "p"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := f.run("", args...).wantCode(t, 2)
			if !strings.HasPrefix(r.stderr, "Error: ") || !strings.Contains(r.stderr, "--help' for usage") {
				t.Fatalf("stderr %q", r.stderr)
			}
		})
	}
	if n := len(f.requests("")); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
}

func TestHelpAndCompletion(t *testing.T) {
	r := runCLI(t, testDeps(), "", "kms").wantCode(t, 0)
	if !strings.Contains(r.stdout, "encrypt") {
		t.Fatalf("group help:\n%s", r.stdout)
	}
	r = runCLI(t, testDeps(), "", "completion", "bash").wantCode(t, 0)
	if !strings.Contains(r.stdout, "__start_custos") {
		t.Fatalf("bash completion:\n%.200s", r.stdout)
	}
	r = runCLI(t, testDeps(), "", "__complete", "kms", "key", "create", "k", "--type", "").wantCode(t, 0)
	if !strings.Contains(r.stdout, "ed25519") {
		t.Fatalf("--type completion:\n%s", r.stdout)
	}
}

func TestInit(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("POST /v1/sys/init", http.StatusOK, api.InitResponse{
		Keys: []string{"share-one", "share-two"}, RootToken: "root-token", ClusterCACert: "-----BEGIN CERTIFICATE-----\n",
	})
	caOut := filepath.Join(t.TempDir(), "ca.pem")
	r := f.run("", "operator", "init", "--key-shares", "2", "--key-threshold", "2", "--ca-out", caOut).wantCode(t, 0)
	var req api.InitRequest
	f.last("POST /v1/sys/init").decode(t, &req)
	if req != (api.InitRequest{SecretShares: 2, SecretThreshold: 2}) {
		t.Fatalf("request %+v", req)
	}
	for _, want := range []string{"Unseal share 1  share-one", "Unseal share 2  share-two", "Root token      root-token", caOut} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("missing %q in\n%s", want, r.stdout)
		}
	}
	if b, err := os.ReadFile(caOut); err != nil || string(b) != "-----BEGIN CERTIFICATE-----\n" {
		t.Fatalf("ca-out: %q %v", b, err)
	}
}

// unsealServer answers unseal calls like a node with a threshold of 3.
func unsealServer(f *fakeAPI) {
	progress := 0
	f.on("POST /v1/sys/unseal", func(r recorded) (int, any) {
		var req api.UnsealRequest
		_ = json.Unmarshal(r.Body, &req)
		switch {
		case req.Reset:
			progress = 0
		case req.Key == "wrong":
			return http.StatusBadRequest, apiErrorDoc(api.CodeInvalidArgument, "the share does not match")
		default:
			progress++
		}
		st := api.SealStatus{Initialized: true, Sealed: progress < 3, Type: "shamir", Shares: 5, Threshold: 3, Progress: progress % 3, NodeID: "n1"}
		return http.StatusOK, st
	})
}

func TestUnseal(t *testing.T) {
	t.Run("shares from stdin until unsealed", func(t *testing.T) {
		f := newFakeAPI(t)
		unsealServer(f)
		r := f.run("s1\n\n  s2  \ns3\ns4-not-needed\n", "operator", "unseal").wantCode(t, 0)
		var keys []string
		for _, rec := range f.requests("POST /v1/sys/unseal") {
			var req api.UnsealRequest
			rec.decode(t, &req)
			keys = append(keys, req.Key)
		}
		if !reflect.DeepEqual(keys, []string{"s1", "s2", "s3"}) {
			t.Fatalf("shares sent %q", keys)
		}
		if !strings.Contains(r.stdout, "Sealed  false") || strings.Contains(r.stdout+r.stderr, "s2") {
			t.Fatalf("output:\n%s\n%s", r.stdout, r.stderr)
		}
	})
	t.Run("input ends first", func(t *testing.T) {
		f := newFakeAPI(t)
		unsealServer(f)
		r := f.run("s1\n", "-o", "json", "operator", "unseal").wantCode(t, 0)
		var st api.SealStatus
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || !st.Sealed || st.Progress != 1 {
			t.Fatalf("%v %+v", err, st)
		}
	})
	t.Run("argument", func(t *testing.T) {
		f := newFakeAPI(t)
		unsealServer(f)
		r := f.run("ignored\n", "operator", "unseal", "s1").wantCode(t, 0)
		if n := len(f.requests("POST /v1/sys/unseal")); n != 1 || !strings.Contains(r.stdout, "Unseal progress  1/3") {
			t.Fatalf("%d requests, output:\n%s", n, r.stdout)
		}
	})
	t.Run("wrong share", func(t *testing.T) {
		f := newFakeAPI(t)
		unsealServer(f)
		r := f.run("wrong\ns2\n", "operator", "unseal").wantCode(t, 1)
		if n := len(f.requests("POST /v1/sys/unseal")); n != 1 || !strings.Contains(r.stderr, "(code invalid_argument, request req-1)") {
			t.Fatalf("%d requests, stderr %q", n, r.stderr)
		}
	})
	t.Run("no share", func(t *testing.T) {
		f := newFakeAPI(t)
		unsealServer(f)
		r := f.run("\n", "operator", "unseal").wantCode(t, 1)
		if !strings.Contains(r.stderr, "no share given") || len(f.requests("")) != 0 {
			t.Fatalf("stderr %q", r.stderr)
		}
	})
	t.Run("reset", func(t *testing.T) {
		f := newFakeAPI(t)
		unsealServer(f)
		f.run("", "operator", "unseal", "--reset").wantCode(t, 0)
		var req api.UnsealRequest
		f.last("POST /v1/sys/unseal").decode(t, &req)
		if !req.Reset || req.Key != "" {
			t.Fatalf("request %+v", req)
		}
	})
}

func TestSealAndJoinToken(t *testing.T) {
	f := newFakeAPI(t)
	f.reply("POST /v1/sys/seal", http.StatusNoContent, nil)
	f.reply("POST /v1/sys/join-token", http.StatusOK, api.JoinTokenResponse{Token: "join-tok", ExpiresAt: testTime, CAFingerprint: "ab12"})
	f.run("", "--token", "tok", "operator", "seal").wantCode(t, 0)
	if f.last("POST /v1/sys/seal").Token != "tok" {
		t.Fatal("seal sent without the token")
	}
	r := f.run("", "--token", "tok", "operator", "join-token", "create", "--ttl", "10m",
		"--api-host", "n2.example.net", "--api-host", "10.0.0.2", "--cluster-host", "10.0.0.2").wantCode(t, 0)
	var req api.JoinTokenRequest
	f.last("POST /v1/sys/join-token").decode(t, &req)
	if !slices.Equal(req.APIHosts, []string{"n2.example.net", "10.0.0.2"}) || !slices.Equal(req.ClusterHosts, []string{"10.0.0.2"}) {
		t.Fatalf("hosts in the request: %+v", req)
	}
	if req.TTL != "10m" || !strings.Contains(r.stdout, "join-tok") || !strings.Contains(r.stdout, "--join-ca-fingerprint ab12") {
		t.Fatalf("request %+v, stdout:\n%s", req, r.stdout)
	}
}

func TestRaft(t *testing.T) {
	f := newFakeAPI(t)
	healthyNode(f)
	f.reply("POST /v1/sys/raft/remove-peer", http.StatusNoContent, nil)
	f.reply("POST /v1/sys/raft/step-down", http.StatusNoContent, nil)
	snap := []byte("\x00snapshot\xffbytes")
	f.reply("GET /v1/sys/raft/snapshot", http.StatusOK, snap)
	f.reply("POST /v1/sys/raft/snapshot", http.StatusNoContent, nil)

	r := f.run("", "operator", "raft", "peers").wantCode(t, 0)
	if !strings.Contains(r.stdout, "n2  10.0.0.2:8444  true   false   true     2030-01-02T03:04:05Z") {
		t.Fatalf("peers:\n%s", r.stdout)
	}
	f.run("", "operator", "raft", "remove-peer", "n2").wantCode(t, 0)
	var req api.RemovePeerRequest
	f.last("POST /v1/sys/raft/remove-peer").decode(t, &req)
	if req.NodeID != "n2" {
		t.Fatalf("remove-peer %+v", req)
	}
	f.run("", "operator", "raft", "step-down").wantCode(t, 0)

	file := filepath.Join(t.TempDir(), "custos.snap")
	r = f.run("", "-o", "json", "operator", "raft", "snapshot", "save", file).wantCode(t, 0)
	b, err := os.ReadFile(file)
	if err != nil || string(b) != string(snap) {
		t.Fatalf("saved %q, %v", b, err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot mode %v", fi.Mode())
	}
	if !strings.Contains(r.stdout, `"bytes": 15`) {
		t.Fatalf("json: %s", r.stdout)
	}
	f.run("", "operator", "raft", "snapshot", "restore", file).wantCode(t, 0)
	if got := f.last("POST /v1/sys/raft/snapshot"); string(got.Body) != string(snap) || got.Query != "" {
		t.Fatalf("restored %q (query %q)", got.Body, got.Query)
	}
	f.run("", "operator", "raft", "snapshot", "restore", "--force", file).wantCode(t, 0)
	if rs := f.requests("POST /v1/sys/raft/snapshot"); len(rs) != 2 || rs[1].Query != "force=true" {
		t.Fatalf("restore --force sent %+v", rs)
	}

	// A failed download leaves no file behind.
	f.reply("GET /v1/sys/raft/snapshot", http.StatusServiceUnavailable, apiErrorDoc(api.CodeUnavailable, "no leader"))
	bad := filepath.Join(t.TempDir(), "bad.snap")
	f.run("", "operator", "raft", "snapshot", "save", bad).wantCode(t, 1)
	if ents, _ := os.ReadDir(filepath.Dir(bad)); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}
