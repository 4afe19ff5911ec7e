package cli

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/internal/testutil"
	"github.com/custos-pki/custos/node"
)

// freeLoopback returns a loopback address with a free port, out of the
// range outgoing connections take their ports from (testutil.FreeAddr).
func freeLoopback(t *testing.T) string { return testutil.FreeAddr(t) }

// TestCeremoniesAgainstARealNode drives generate-root, rekey, rotate and
// key-status through the CLI against a real node over HTTPS.
func TestCeremoniesAgainstARealNode(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.DataDir = "n1", filepath.Join(t.TempDir(), "n1")
	cfg.APIAddr, cfg.ClusterAddr = freeLoopback(t), freeLoopback(t)
	cfg.HeartbeatTimeout, cfg.ElectionTimeout = 500*time.Millisecond, 500*time.Millisecond
	cfg.Logger, cfg.RaftLog = slog.New(slog.DiscardHandler), io.Discard
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	cli := func(stdin string, args ...string) result {
		t.Helper()
		return runCLI(t, testDeps(), stdin, append([]string{"--addr", n.APIURL(), "--ca-cert", caFile}, args...)...)
	}
	r := runCLI(t, testDeps(), "", "--addr", n.APIURL(), "--ca-cert", n.CACertPath(), "-o", "json",
		"operator", "init", "--key-shares", "3", "--key-threshold", "2", "--ca-out", caFile).wantCode(t, 0)
	var ir api.InitResponse
	if err := json.Unmarshal([]byte(r.stdout), &ir); err != nil || len(ir.Keys) != 3 {
		t.Fatalf("init: %v %s", err, r.stdout)
	}
	cli(ir.Keys[0]+"\n"+ir.Keys[1]+"\n", "operator", "unseal").wantCode(t, 0)

	// generate-root: init makes the OTP, update needs the nonce, decode
	// gives a token that works where the encoded one does not.
	r = cli("", "-o", "json", "operator", "generate-root", "init").wantCode(t, 0)
	var gi ceremonyInitOutput
	if err := json.Unmarshal([]byte(r.stdout), &gi); err != nil || gi.Nonce == "" || gi.OTP == "" {
		t.Fatalf("generate-root init: %v %s", err, r.stdout)
	}
	cli(ir.Keys[0]+"\n", "operator", "generate-root", "update").wantCode(t, 2)
	r = cli(ir.Keys[0]+"\n", "operator", "generate-root", "update", "--nonce", "wrong")
	if r.code == 0 || !strings.Contains(r.stderr, "nonce") {
		t.Fatalf("wrong nonce: %+v", r)
	}
	r = cli(ir.Keys[0]+"\n"+ir.Keys[2]+"\n", "-o", "json", "operator", "generate-root", "update", "--nonce", gi.Nonce).wantCode(t, 0)
	var gu api.CeremonyStatus
	if err := json.Unmarshal([]byte(r.stdout), &gu); err != nil || !gu.Complete || gu.EncodedToken == "" || strings.Contains(r.stdout, "cst_") {
		t.Fatalf("generate-root update: %v %s", err, r.stdout)
	}
	cli("", "--token", gu.EncodedToken, "operator", "key-status").wantCode(t, 1)
	r = cli("", "operator", "generate-root", "decode", "--otp", gi.OTP, gu.EncodedToken).wantCode(t, 0)
	root := strings.TrimSpace(r.stdout)
	r = cli("", "--token", root, "operator", "key-status").wantCode(t, 0)
	if !strings.Contains(r.stdout, "Term") {
		t.Fatalf("key-status:\n%s", r.stdout)
	}

	// rotate adds a term; key-status shows it.
	r = cli("", "--token", root, "-o", "json", "operator", "rotate").wantCode(t, 0)
	var ks api.KeyStatus
	if err := json.Unmarshal([]byte(r.stdout), &ks); err != nil || ks.Term != 2 {
		t.Fatalf("rotate: %v %s", err, r.stdout)
	}

	// rekey: the new shares come in the answer to the last share.
	r = cli("", "--token", root, "-o", "json", "operator", "rekey", "init", "--key-shares", "2", "--key-threshold", "2").wantCode(t, 0)
	var ri ceremonyInitOutput
	if err := json.Unmarshal([]byte(r.stdout), &ri); err != nil || ri.Nonce == "" {
		t.Fatalf("rekey init: %v %s", err, r.stdout)
	}
	cli("", "--token", root, "operator", "rekey", "cancel").wantCode(t, 2)
	r = cli(ir.Keys[1]+"\n"+ir.Keys[2]+"\n", "--token", root, "-o", "json", "operator", "rekey", "update", "--nonce", ri.Nonce).wantCode(t, 0)
	var ru api.CeremonyStatus
	if err := json.Unmarshal([]byte(r.stdout), &ru); err != nil || !ru.Complete || len(ru.Keys) != 2 {
		t.Fatalf("rekey update: %v %s", err, r.stdout)
	}

	// rotate-root with the new shares.
	r = cli("", "--token", root, "-o", "json", "operator", "rotate-root", "init").wantCode(t, 0)
	var rr ceremonyInitOutput
	if err := json.Unmarshal([]byte(r.stdout), &rr); err != nil || rr.Nonce == "" {
		t.Fatalf("rotate-root init: %v %s", err, r.stdout)
	}
	r = cli(ru.Keys[0]+"\n"+ru.Keys[1]+"\n", "--token", root, "operator", "rotate-root", "update", "--nonce", rr.Nonce).wantCode(t, 0)
	if !strings.Contains(r.stdout, "Root key generation  2") {
		t.Fatalf("rotate-root update:\n%s", r.stdout)
	}
}
