package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/internal/testutil"
)

// buildBinary compiles cmd/custos once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "custos")
	cmd := exec.Command("go", "build", "-tags", "nobadger,nomysql,nopgx", "-o", bin, "github.com/custos-pki/custos/cmd/custos")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build: %v", err)
	}
	return bin
}

// freePort returns a loopback address with a free port, out of the range
// outgoing connections take their ports from (testutil.FreeAddr).
func freePort(t *testing.T) string { return testutil.FreeAddr(t) }

type proc struct {
	id, dir, api, cluster string
	args                  []string
	cmd                   *exec.Cmd
	log                   *os.File
}

type harness struct {
	t     *testing.T
	bin   string
	ca    string // cluster CA file
	token string
	procs map[string]*proc
}

func (h *harness) start(p *proc) {
	h.t.Helper()
	args := append([]string{"server", "--node-id", p.id, "--data-dir", p.dir, "--api-addr", p.api, "--cluster-addr", p.cluster, "--log-level", "warn"}, p.args...)
	var err error
	if p.log == nil {
		if p.log, err = os.Create(filepath.Join(filepath.Dir(p.dir), p.id+".log")); err != nil {
			h.t.Fatal(err)
		}
	}
	p.cmd = exec.Command(h.bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.Env = append(os.Environ(), "CUSTOS_TOKEN=", "CUSTOS_ADDR=", "CUSTOS_CACERT=")
	if err := p.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { p.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				p.cmd.Process.Kill()
			}
		}
	})
	h.waitUp(p)
}

// waitUp waits until the node's API answers at all.
func (h *harness) waitUp(p *proc) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", p.api); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.dumpLogs()
	h.t.Fatalf("node %s did not come up", p.id)
}

func (h *harness) dumpLogs() {
	for _, p := range h.procs {
		b, _ := os.ReadFile(p.log.Name())
		h.t.Logf("--- %s log ---\n%s", p.id, b)
	}
}

// cli runs the custos CLI against node p and returns its standard output.
func (h *harness) cli(p *proc, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(os.Environ(), "CUSTOS_ADDR=https://"+p.api, "CUSTOS_CACERT="+h.ca, "CUSTOS_TOKEN="+h.token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("custos %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (h *harness) mustCLI(p *proc, args ...string) string {
	h.t.Helper()
	out, err := h.cli(p, args...)
	if err != nil {
		h.dumpLogs()
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) mustJSON(p *proc, v any, args ...string) {
	h.t.Helper()
	out := h.mustCLI(p, append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		h.t.Fatalf("custos %s: %v in %q", strings.Join(args, " "), err, out)
	}
}

func (h *harness) eventually(d time.Duration, what string, fn func() error) {
	h.t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.dumpLogs()
	h.t.Fatalf("%s: still failing after %v: %v", what, d, err)
}

func TestProcessClusterSurvivesLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs three processes")
	}
	h := &harness{t: t, bin: buildBinary(t), procs: map[string]*proc{}}
	root := t.TempDir()
	for _, id := range []string{"n1", "n2", "n3"} {
		h.procs[id] = &proc{id: id, dir: filepath.Join(root, id), api: freePort(t), cluster: freePort(t)}
	}
	n1, n2, n3 := h.procs["n1"], h.procs["n2"], h.procs["n3"]

	// Node 1: init (trusting its bootstrap CA), then unseal with the CLI.
	h.start(n1)
	h.ca = filepath.Join(n1.dir, "tls", "ca.pem")
	var ir api.InitResponse
	h.mustJSON(n1, &ir, "operator", "init", "--key-shares", "5", "--key-threshold", "3")
	if len(ir.Keys) != 5 || ir.RootToken == "" {
		t.Fatalf("init gave %d keys", len(ir.Keys))
	}
	h.ca = filepath.Join(root, "cluster-ca.pem")
	if err := os.WriteFile(h.ca, []byte(ir.ClusterCACert), 0o644); err != nil {
		t.Fatal(err)
	}
	h.token = ir.RootToken
	unseal := func(p *proc) {
		for _, k := range ir.Keys[:3] {
			h.mustCLI(p, "operator", "unseal", k)
		}
	}
	unseal(n1)

	// Nodes 2 and 3 join with one-time tokens and the pinned CA.
	for _, p := range []*proc{n2, n3} {
		var jt api.JoinTokenResponse
		h.mustJSON(n1, &jt, "operator", "join-token", "create")
		p.args = []string{"--join-addr", "https://" + n1.api, "--join-token", jt.Token, "--join-ca-fingerprint", jt.CAFingerprint}
		h.start(p)
		unseal(p)
		p.args = nil // a restart needs no join settings
	}
	h.eventually(30*time.Second, "three voters", func() error {
		var st api.RaftStatus
		if err := json.Unmarshal([]byte(h.mustCLI(n1, "operator", "raft", "peers", "-o", "json")), &st); err != nil {
			return err
		}
		voters := 0
		for _, p := range st.Peers {
			if p.Voter {
				voters++
			}
		}
		if voters != 3 {
			return fmt.Errorf("%d voters", voters)
		}
		return nil
	})

	// Write through a follower, read through every node.
	h.mustCLI(n2, "kms", "key", "create", "app")
	ct := strings.TrimSpace(h.mustCLI(n3, "kms", "encrypt", "app", "attack at dawn"))
	for _, p := range []*proc{n1, n2, n3} {
		if got := h.mustCLI(p, "kms", "decrypt", "app", ct); got != "attack at dawn" {
			t.Fatalf("decrypt on %s: %q", p.id, got)
		}
	}

	// Secrets and certificates through the CLI, on different nodes.
	h.mustCLI(n1, "secret", "mount", "create", "kv")
	h.mustCLI(n2, "secret", "put", "kv/app/db", "password=hunter2-but-longer")
	if got := h.mustCLI(n3, "secret", "get", "kv/app/db", "--field", "password"); strings.TrimSpace(got) != "hunter2-but-longer" {
		t.Fatalf("secret read on n3: %q", got)
	}
	h.mustCLI(n3, "ca", "role", "write", "web", "--allowed-domains", "example.com", "--allow-subdomains")
	certDir := filepath.Join(root, "issued")
	h.mustCLI(n2, "ca", "issue", "web", "--common-name", "api.example.com", "--dns", "api.example.com", "--out-dir", certDir)
	if _, err := os.Stat(filepath.Join(certDir, "key.pem")); err != nil {
		t.Fatalf("issue wrote no key: %v", err)
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		if out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(certDir, "chain.pem"), filepath.Join(certDir, "cert.pem")).CombinedOutput(); err != nil {
			t.Fatalf("openssl verify: %s (%v)", out, err)
		}
	}

	// SIGKILL the leader.
	var st api.RaftStatus
	h.mustJSON(n1, &st, "operator", "raft", "peers")
	leader := h.procs[st.LeaderID]
	if leader == nil {
		t.Fatalf("leader %q is not one of ours", st.LeaderID)
	}
	if err := leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	leader.cmd.Wait()
	var alive []*proc
	for _, p := range []*proc{n1, n2, n3} {
		if p != leader {
			alive = append(alive, p)
		}
	}
	// The survivors elect a leader and go on serving reads and writes.
	var ct2 string
	h.eventually(20*time.Second, "a write after the leader kill", func() error {
		out, err := h.cli(alive[0], "kms", "encrypt", "app", "after the kill")
		ct2 = strings.TrimSpace(out)
		return err
	})
	for _, p := range alive {
		if got := h.mustCLI(p, "kms", "decrypt", "app", ct); got != "attack at dawn" {
			t.Fatalf("read on %s after the kill: %q", p.id, got)
		}
	}
	h.mustCLI(alive[1], "kms", "key", "rotate", "app")

	// The killed node restarts sealed, is unsealed, and catches up.
	h.start(leader)
	unseal(leader)
	h.eventually(30*time.Second, "the restarted node catching up", func() error {
		out, err := h.cli(leader, "kms", "decrypt", "app", ct2)
		if err != nil {
			return err
		}
		if out != "after the kill" {
			return fmt.Errorf("decrypt gave %q", out)
		}
		var info struct {
			Latest int `json:"latest_version"`
		}
		if err := json.Unmarshal([]byte(h.mustCLI(leader, "kms", "key", "show", "app", "-o", "json")), &info); err != nil {
			return err
		}
		if info.Latest != 2 {
			return fmt.Errorf("the restarted node sees version %d of the key", info.Latest)
		}
		return nil
	})
}
