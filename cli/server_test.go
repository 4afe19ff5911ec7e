package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/custos-pki/custos/internal/ratelimit"
	"github.com/custos-pki/custos/node"
)

// fakeNode stands in for a started node: the server command's job is to
// build its configuration and drive its lifecycle.
type fakeNode struct {
	dev      *node.DevInfo
	running  chan struct{} // closed when the server reports the node running
	once     sync.Once
	reopened chan struct{}
	closed   chan struct{}
	closeErr error
	block    chan struct{} // Close waits on it when set
}

func (n *fakeNode) Dev() *node.DevInfo { return n.dev }
func (n *fakeNode) Reopen() error      { n.reopened <- struct{}{}; return nil }
func (n *fakeNode) APIURL() string {
	n.once.Do(func() { close(n.running) })
	return "https://127.0.0.1:8443"
}

func (n *fakeNode) Close() error {
	if n.block != nil {
		<-n.block
	}
	close(n.closed)
	return n.closeErr
}

// serverHarness runs `custos server` with a fake node and signals the
// test sends.
type serverHarness struct {
	t        *testing.T
	sigs     chan os.Signal
	started  chan node.Config
	node     *fakeNode
	startErr error
	done     chan result
}

func newServerHarness(t *testing.T) *serverHarness {
	return &serverHarness{
		t:       t,
		sigs:    make(chan os.Signal, 1),
		started: make(chan node.Config, 1),
		node:    &fakeNode{running: make(chan struct{}), reopened: make(chan struct{}, 1), closed: make(chan struct{})},
		done:    make(chan result, 1),
	}
}

func (h *serverHarness) deps() deps {
	return deps{
		startNode: func(_ context.Context, cfg node.Config) (serverNode, error) {
			h.started <- cfg
			if h.startErr != nil {
				return nil, h.startErr
			}
			return h.node, nil
		},
		signals: func() (<-chan os.Signal, func()) { return h.sigs, func() {} },
	}
}

// start runs the command in the background and returns the configuration
// the node was started with.
func (h *serverHarness) start(args ...string) node.Config {
	h.t.Helper()
	go func() { h.done <- runCLI(h.t, h.deps(), "", append([]string{"server"}, args...)...) }()
	select {
	case cfg := <-h.started:
		return cfg
	case r := <-h.done:
		h.t.Fatalf("server ended before starting a node: %+v", r)
	case <-time.After(10 * time.Second):
		h.t.Fatal("the node was not started")
	}
	return node.Config{}
}

func (h *serverHarness) wait() result {
	h.t.Helper()
	select {
	case r := <-h.done:
		return r
	case <-time.After(10 * time.Second):
		h.t.Fatal("server did not stop")
	}
	return result{}
}

// config runs the server up to the node's start and stops it.
func serverConfig(t *testing.T, args ...string) node.Config {
	t.Helper()
	h := newServerHarness(t)
	cfg := h.start(args...)
	h.sigs <- syscall.SIGTERM
	h.wait().wantCode(t, 0)
	return cfg
}

func writeConfig(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServerSettingsPrecedence(t *testing.T) {
	file := writeConfig(t, "custos.yaml", `
node_id: from-file
data_dir: /from/file
api_addr: 127.0.0.1:1000
cluster_addr: 127.0.0.1:1001
api_hosts: [file.example]
audit_log: /from/file/audit.log
join_addr: https://10.0.0.1:8443
join_ca_fingerprint: abcd
node_cert_ttl: 30d
`)
	t.Setenv("CUSTOS_DATA_DIR", "/from/env")
	t.Setenv("CUSTOS_API_ADDR", "127.0.0.1:2000")
	t.Setenv("CUSTOS_API_HOSTS", "env1.example, env2.example")
	t.Setenv("CUSTOS_JOIN_TOKEN", "cjt_from_env")

	cfg := serverConfig(t, "--config", file, "--api-addr", "127.0.0.1:3000")
	want := node.Config{
		NodeID:            "from-file",      // file
		DataDir:           "/from/env",      // env over file
		APIAddr:           "127.0.0.1:3000", // flag over env and file
		ClusterAddr:       "127.0.0.1:1001", // file over default
		APIHosts:          []string{"env1.example", "env2.example"},
		AuditLog:          "/from/file/audit.log",
		JoinAddr:          "https://10.0.0.1:8443",
		JoinToken:         "cjt_from_env",
		JoinCAFingerprint: "abcd",
		Limits:            node.DefaultLimits(),
		BackupKeep:        24,
		NodeCertTTL:       30 * 24 * time.Hour,
		TidyInterval:      time.Hour,
		CertRetention:     72 * time.Hour,
	}
	cfg.Logger = nil
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("config\n%+v\nwant\n%+v", cfg, want)
	}

	// A repeated flag beats the environment; the config path can come
	// from the environment too.
	t.Setenv("CUSTOS_CONFIG", file)
	cfg = serverConfig(t, "--api-host", "flag1.example", "--api-host", "flag2.example")
	if !reflect.DeepEqual(cfg.APIHosts, []string{"flag1.example", "flag2.example"}) || cfg.NodeID != "from-file" {
		t.Fatalf("hosts %q, node %q", cfg.APIHosts, cfg.NodeID)
	}
}

// TestServerValidatorDeny: --acme-validator-deny repeats, takes lists, and
// a value that is not a range is a usage error naming the setting.
func TestServerValidatorDeny(t *testing.T) {
	cfg := serverConfig(t, "--node-id", "n1", "--data-dir", "/d",
		"--acme-validator-deny", "10.0.0.0/8", "--acme-validator-deny", "127.0.0.1, fd00::/8")
	if want := []string{"10.0.0.0/8", "127.0.0.1", "fd00::/8"}; !reflect.DeepEqual(cfg.ACMEValidatorDeny, want) {
		t.Fatalf("deny %q, want %q", cfg.ACMEValidatorDeny, want)
	}
	h := newServerHarness(t)
	r := runCLI(t, h.deps(), "", "server", "--node-id", "n1", "--data-dir", "/d", "--acme-validator-deny", "10.0.0.0/33")
	r.wantCode(t, 2)
	if !strings.Contains(r.stderr, "acme_validator_deny") {
		t.Errorf("error does not name the setting:\n%s", r.stderr)
	}
}

func TestServerDefaults(t *testing.T) {
	cfg := serverConfig(t, "--node-id", "n1", "--data-dir", "/var/lib/custos")
	def := node.DefaultConfig()
	if cfg.APIAddr != def.APIAddr || cfg.ClusterAddr != def.ClusterAddr || cfg.Dev || cfg.Logger == nil {
		t.Fatalf("defaults: %+v", cfg)
	}
	if cfg.BackupInterval != 0 || cfg.BackupKeep != 24 {
		t.Fatalf("backup defaults: %v, keep %d", cfg.BackupInterval, cfg.BackupKeep)
	}
	cfg = serverConfig(t, "--node-id", "n1", "--data-dir", "/d", "--backup-interval", "1h", "--backup-dir", "/var/backups/custos", "--backup-keep", "3")
	if cfg.BackupInterval != time.Hour || cfg.BackupDir != "/var/backups/custos" || cfg.BackupKeep != 3 {
		t.Fatalf("backup settings: %v %q %d", cfg.BackupInterval, cfg.BackupDir, cfg.BackupKeep)
	}
	if cfg.TidyInterval != time.Hour || cfg.CertRetention != 72*time.Hour {
		t.Fatalf("tidy defaults: every %v, retention %v", cfg.TidyInterval, cfg.CertRetention)
	}
	cfg = serverConfig(t, "--node-id", "n1", "--data-dir", "/d", "--tidy-interval", "10m", "--cert-retention", "0s")
	if cfg.TidyInterval != 10*time.Minute || cfg.CertRetention != 0 {
		t.Fatalf("tidy settings: every %v, retention %v", cfg.TidyInterval, cfg.CertRetention)
	}
	// TOML and JSON config files work the same.
	toml := writeConfig(t, "c.toml", "node_id = \"t1\"\ndata_dir = \"/d\"\n")
	if cfg := serverConfig(t, "--config", toml); cfg.NodeID != "t1" || cfg.DataDir != "/d" {
		t.Fatalf("toml: %+v", cfg)
	}
}

func TestServerPKIListener(t *testing.T) {
	t.Setenv("CUSTOS_PKI_URL_BASE", "http://pki.example.com")
	cfg := serverConfig(t, "--node-id", "n1", "--data-dir", "/d", "--pki-http-addr", "0.0.0.0:8080")
	if cfg.PKIHTTPAddr != "0.0.0.0:8080" || cfg.PKIURLBase != "http://pki.example.com" {
		t.Fatalf("PKI listener %q, URL base %q", cfg.PKIHTTPAddr, cfg.PKIURLBase)
	}
}

func TestServerDev(t *testing.T) {
	h := newServerHarness(t)
	h.node.dev = &node.DevInfo{RootToken: "cst_root", CACertPath: "/d/tls/ca.pem", EnvFile: "/d/env", UnsealKeyFile: "/d/unseal.key"}
	cfg := h.start("--dev")
	wd, _ := os.Getwd()
	if !cfg.Dev || cfg.NodeID != devNodeID || cfg.DataDir != filepath.Join(wd, "custos-dev") {
		t.Fatalf("dev config %+v", cfg)
	}
	<-h.node.running
	h.sigs <- syscall.SIGINT
	r := h.wait().wantCode(t, 0)
	for _, want := range []string{"https://127.0.0.1:8443", "cst_root", "/d/tls/ca.pem", ". /d/env", "custos status", "custos kms encrypt demo hello"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("banner lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stderr, "cst_root") {
		t.Fatalf("the root token was logged:\n%s", r.stderr)
	}
}

func TestServerSignals(t *testing.T) {
	h := newServerHarness(t)
	h.start("--node-id", "n1", "--data-dir", t.TempDir())
	<-h.node.running
	h.sigs <- syscall.SIGHUP
	select {
	case <-h.node.reopened:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP did not reopen the audit log")
	}
	select {
	case <-h.node.closed:
		t.Fatal("closed on SIGHUP")
	default:
	}
	h.sigs <- syscall.SIGTERM
	r := h.wait().wantCode(t, 0)
	<-h.node.closed
	if !strings.Contains(r.stderr, "reopened the audit log") || !strings.Contains(r.stderr, "stopped") {
		t.Fatalf("log:\n%s", r.stderr)
	}

	// A second signal gives up waiting for a slow close.
	h = newServerHarness(t)
	h.node.block = make(chan struct{})
	defer close(h.node.block)
	h.start("--node-id", "n1", "--data-dir", t.TempDir())
	h.sigs <- syscall.SIGINT
	h.sigs <- syscall.SIGINT
	r = h.wait().wantCode(t, 1)
	if !strings.Contains(r.stderr, "without waiting") {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestServerErrors(t *testing.T) {
	h := newServerHarness(t)
	h.startErr = errors.New("node: data dir: permission denied")
	go func() { h.done <- runCLI(t, h.deps(), "", "server", "--node-id", "n1", "--data-dir", "/x") }()
	<-h.started
	if r := h.wait().wantCode(t, 1); !strings.Contains(r.stderr, "Error: start the node: node: data dir: permission denied") {
		t.Fatalf("stderr %q", r.stderr)
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no node id", []string{"--data-dir", "/x"}, 2, "--node-id"},
		{"no data dir", []string{"--node-id", "n1"}, 2, "--data-dir"},
		{"bad node id", []string{"--node-id", "Not_A_Label", "--data-dir", "/x"}, 2, "node_id"},
		{"join without token", []string{"--node-id", "n1", "--data-dir", "/x", "--join-addr", "https://a:1"}, 2, "join_token"},
		{"bad PKI listen address", []string{"--node-id", "n1", "--data-dir", "/x", "--pki-http-addr", "8080"}, 2, "pki_http_addr"},
		{"bad PKI URL base", []string{"--node-id", "n1", "--data-dir", "/x", "--pki-url-base", "ftp://pki.example"}, 2, "pki_url_base"},
		{"bad log level", []string{"--node-id", "n1", "--data-dir", "/x", "--log-level", "loud"}, 2, "log level"},
		{"bad backup interval", []string{"--node-id", "n1", "--data-dir", "/x", "--backup-interval", "soon", "--backup-dir", "/b"}, 2, "backup_interval"},
		{"backups without a dir", []string{"--node-id", "n1", "--data-dir", "/x", "--backup-interval", "1h"}, 2, "backup_dir"},
		{"bad backup keep", []string{"--node-id", "n1", "--data-dir", "/x", "--backup-interval", "1h", "--backup-dir", "/b", "--backup-keep", "0"}, 2, "backup_keep"},
		{"bad tidy interval", []string{"--node-id", "n1", "--data-dir", "/x", "--tidy-interval", "0s"}, 2, "tidy_interval"},
		{"bad cert retention", []string{"--node-id", "n1", "--data-dir", "/x", "--cert-retention", "-1h"}, 2, "cert_retention"},
		{"bad node cert ttl", []string{"--node-id", "n1", "--data-dir", "/x", "--node-cert-ttl", "soon"}, 2, "node_cert_ttl"},
		{"node cert ttl too short", []string{"--node-id", "n1", "--data-dir", "/x", "--node-cert-ttl", "1s"}, 2, "node_cert_ttl"},
		{"unknown config key", []string{"--config", writeConfig(t, "c.yaml", "nodeid: n1\n")}, 1, `unknown setting "nodeid"`},
		{"missing config", []string{"--config", "/no/such/custos.yaml"}, 1, "/no/such/custos.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newServerHarness(t)
			r := runCLI(t, h.deps(), "", append([]string{"server"}, tc.args...)...).wantCode(t, tc.code)
			if !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("stderr %q lacks %q", r.stderr, tc.want)
			}
			if len(h.started) != 0 {
				t.Fatal("the node was started")
			}
		})
	}
}

func TestServerLimitSettings(t *testing.T) {
	cfg := serverConfig(t, "--node-id", "n1", "--data-dir", t.TempDir(),
		"--max-in-flight", "7", "--public-rate-limit", "off", "--acme-rate-new-account", "5/1h:10", "--acme-rate-failed-validations", "3/30m")
	want := node.DefaultLimits()
	want.MaxInFlight = 7
	want.PublicPerIP = ratelimit.Limit{}
	want.ACME.NewAccountPerIP = ratelimit.Limit{Count: 5, Period: time.Hour, Burst: 10}
	want.ACME.FailedValidationsPerAccount = ratelimit.Limit{Count: 3, Period: 30 * time.Minute}
	if !reflect.DeepEqual(cfg.Limits, want) {
		t.Fatalf("limits\n%+v\nwant\n%+v", cfg.Limits, want)
	}
	for _, bad := range [][]string{
		{"--acme-rate-new-order", "10"}, {"--max-connections", "-1"}, {"--public-rate-limit", "1/0s"},
	} {
		r := runCLI(t, newServerHarness(t).deps(), "", append([]string{"server", "--node-id", "n1", "--data-dir", t.TempDir()}, bad...)...)
		r.wantCode(t, 2)
		if !strings.Contains(r.stderr, strings.TrimPrefix(strings.ReplaceAll(bad[0], "-", "_"), "__")) {
			t.Errorf("%v: the error does not name the setting:\n%s", bad, r.stderr)
		}
	}
}
