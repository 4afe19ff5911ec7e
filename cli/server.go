package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/custos-pki/custos/internal/gcpolicy"
	"github.com/custos-pki/custos/node"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// serverNode is what the server command needs of a running node.
type serverNode interface {
	Close() error
	Reopen() error
	APIURL() string
	Dev() *node.DevInfo
}

// deps are what the command line needs of the process, swapped in tests.
type deps struct {
	startNode func(ctx context.Context, cfg node.Config) (serverNode, error)
	// signals subscribes to SIGINT, SIGTERM and SIGHUP.
	signals func() (ch <-chan os.Signal, stop func())
}

func defaultDeps() deps {
	return deps{
		startNode: func(ctx context.Context, cfg node.Config) (serverNode, error) {
			n, err := node.Start(ctx, cfg)
			if err != nil {
				return nil, err
			}
			return n, nil
		},
		signals: func() (<-chan os.Signal, func()) {
			ch := make(chan os.Signal, 4)
			signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			return ch, func() { signal.Stop(ch) }
		},
	}
}

// serverSetting is one setting of the server: its config file key, flag
// and environment variable.
type serverSetting struct {
	key, flag, usage string
}

func (s serverSetting) env() string { return "CUSTOS_" + strings.ToUpper(s.key) }

func serverSettings() []serverSetting {
	return append([]serverSetting{
		{"node_id", "node-id", "this node's ID: a DNS label, unique in the cluster"},
		{"data_dir", "data-dir", "directory of the node's state, TLS files and audit log"},
		{"api_addr", "api-addr", "HTTPS API listen address"},
		{"cluster_addr", "cluster-addr", "node-to-node listen address"},
		{"api_advertise", "api-advertise", "API address others use (default: api-addr)"},
		{"cluster_advertise", "cluster-advertise", "cluster address others use (default: cluster-addr)"},
		{"api_hosts", "api-host", "extra DNS name or IP for the API certificate (repeatable)"},
		{"join_addr", "join-addr", "API address of a cluster member to join, https://host:port"},
		{"join_token", "join-token", "one-time join token (prefer CUSTOS_JOIN_TOKEN: flags show in ps)"},
		{"join_ca_fingerprint", "join-ca-fingerprint", "hex SHA-256 of the cluster CA certificate"},
		{"node_cert_ttl", "node-cert-ttl", "lifetime of the node certificates, renewed at two thirds of it: a duration such as 2160h or 90d (default 90d)"},
		{"unseal_key_file", "unseal-key-file", "unseal from this key file at start (auto-unseal)"},
		{"audit_log", "audit-log", "audit log path (default: <data-dir>/audit.log)"},
		{"acme_base_url", "acme-base-url", "URL ACME clients use, e.g. the load balancer's (default: each request's host)"},
		{"acme_dns_resolver", "acme-dns-resolver", "DNS server (host:port) for every lookup the ACME validator makes (default: the system's)"},
		{"acme_http01_port", "acme-http01-port", "port the ACME validator connects to for http-01 (default 80)"},
		{"acme_tls_alpn01_port", "acme-tls-alpn01-port", "port the ACME validator connects to for tls-alpn-01 (default 443)"},
		{"pki_http_addr", "pki-http-addr", "plain-HTTP listen address serving only CA roots, chains, issuer certificates, CRLs and OCSP (default: none)"},
		{"pki_url_base", "pki-url-base", "base of the OCSP, CA issuers and CRL URLs in certificates (default: http://<pki-http-addr>, else https://<api-advertise>)"},
		{"acme_validator_deny", "acme-validator-deny", "address range (CIDR or IP) the ACME validator must not connect to, besides link-local, unspecified and this node's own addresses (repeatable)"},
		{"workload_api_socket", "workload-api-socket", "Unix socket of the SPIFFE Workload API and Envoy SDS (default: none; <data-dir>/workload.sock with --dev)"},
		{"vault_addr", "vault-addr", "HTTPS listen address of the Vault-compatible API (default: none; 127.0.0.1:8200 with --dev); it is also served under /vault/ on the API port"},
		{"backup_interval", "backup-interval", "write a backup this often, e.g. 1h, on the node that leads (default: never)"},
		{"backup_dir", "backup-dir", "directory of the scheduled backups"},
		{"backup_keep", "backup-keep", "scheduled backups kept in backup-dir (default 24)"},
		{"tidy_interval", "tidy-interval", "how often the leader removes certificates expired for longer than cert-retention (default 1h)"},
		{"cert_retention", "cert-retention", "how long an expired certificate stays in the inventory and step's ACME records, e.g. 72h; a revoked one also stays while a current CRL lists it (default 72h)"},
		{"dev", "dev", "run a one-node dev cluster, initialised and unsealed"},
		{"log_level", "log-level", "log level: debug, info, warn or error"},
	}, limitSettings()...)
}

// Dev mode defaults.
const (
	devDataDir = "./custos-dev"
	devNodeID  = "dev"
	// devVaultAddr is where --dev serves the Vault API, Vault's dev address.
	devVaultAddr = "127.0.0.1:8200"
)

func (a *app) serverCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a custos node",
		Long: "Run a custos node. Settings come from flags, then CUSTOS_* environment variables\n" +
			"(CUSTOS_NODE_ID, CUSTOS_API_HOSTS=a,b, ...), then the --config file (YAML, TOML or JSON,\n" +
			"with keys such as node_id and api_hosts), then defaults. SIGHUP reopens the audit log;\n" +
			"SIGINT or SIGTERM stops the node. The garbage collector runs with GOGC=200 and, under a\n" +
			"cgroup memory limit, a soft limit of 3/4 of it, unless GOGC or GOMEMLIMIT is set.\n\n" +
			"custos server --dev runs a one-node cluster in ./custos-dev, initialised and unsealed.",
		Args: nargs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.readServerConfig(a.v.GetString("config")); err != nil {
				return err
			}
			cfg, err := a.nodeConfig(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			gc := gcpolicy.Apply(os.Getenv, gcpolicy.CgroupLimit)
			cfg.Logger.Info("garbage collector", "gogc", gc.Percent, "soft_memory_limit", gc.Limit)
			return a.serve(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	def := node.DefaultConfig()
	f := cmd.Flags()
	f.String("config", "", "config file (env CUSTOS_CONFIG)")
	a.bind(f, "config", "config", "CUSTOS_CONFIG")
	for _, s := range serverSettings() {
		switch s.key {
		case "api_hosts", "acme_validator_deny":
			f.StringArray(s.flag, nil, s.usage)
		case "dev":
			f.Bool(s.flag, false, s.usage)
		case "api_addr":
			f.String(s.flag, def.APIAddr, s.usage)
		case "cluster_addr":
			f.String(s.flag, def.ClusterAddr, s.usage)
		case "log_level":
			f.String(s.flag, "info", s.usage)
		default:
			f.String(s.flag, "", s.usage)
		}
		a.bind(f, s.key, s.flag, s.env())
	}
	return cmd
}

// readServerConfig merges the config file, if any, below the flags and
// the environment. A key it does not know is an error: a misspelt setting
// must not be silently ignored.
func (a *app) readServerConfig(path string) error {
	if path == "" {
		return nil
	}
	fv := viper.New()
	fv.SetConfigFile(path)
	if err := fv.ReadInConfig(); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	known := map[string]bool{}
	for _, s := range serverSettings() {
		known[s.key] = true
	}
	for _, k := range fv.AllKeys() {
		if !known[k] {
			return fmt.Errorf("config %s: unknown setting %q", path, k)
		}
	}
	if err := a.v.MergeConfigMap(fv.AllSettings()); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// nodeConfig builds the node's configuration from the settings.
func (a *app) nodeConfig(logTo io.Writer) (node.Config, error) {
	v := a.v
	cfg := node.DefaultConfig()
	cfg.NodeID = v.GetString("node_id")
	cfg.DataDir = v.GetString("data_dir")
	if s := v.GetString("api_addr"); s != "" {
		cfg.APIAddr = s
	}
	if s := v.GetString("cluster_addr"); s != "" {
		cfg.ClusterAddr = s
	}
	cfg.APIAdvertise = v.GetString("api_advertise")
	cfg.ClusterAdvertise = v.GetString("cluster_advertise")
	cfg.APIHosts = listSetting(v.GetStringSlice("api_hosts"))
	cfg.JoinAddr = v.GetString("join_addr")
	cfg.JoinToken = v.GetString("join_token")
	cfg.JoinCAFingerprint = v.GetString("join_ca_fingerprint")
	if s := v.GetString("node_cert_ttl"); s != "" {
		d, err := parseDays(s)
		if err != nil || d <= 0 {
			return cfg, usagef("node_cert_ttl: %q is not a duration (e.g. 2160h or 90d)", s)
		}
		cfg.NodeCertTTL = d
	}
	cfg.UnsealKeyFile = v.GetString("unseal_key_file")
	cfg.AuditLog = v.GetString("audit_log")
	cfg.ACMEBaseURL = v.GetString("acme_base_url")
	cfg.ACMEResolver = v.GetString("acme_dns_resolver")
	cfg.PKIHTTPAddr = v.GetString("pki_http_addr")
	cfg.PKIURLBase = v.GetString("pki_url_base")
	cfg.ACMEValidatorDeny = listSetting(v.GetStringSlice("acme_validator_deny"))
	cfg.WorkloadAPISocket = v.GetString("workload_api_socket")
	for key, dst := range map[string]*int{"acme_http01_port": &cfg.ACMEHTTP01Port, "acme_tls_alpn01_port": &cfg.ACMETLSALPN01Port} {
		if s := v.GetString(key); s != "" {
			p, err := strconv.Atoi(s)
			if err != nil || p < 1 || p > 65535 {
				return cfg, usagef("%s: %q is not a port", key, s)
			}
			*dst = p
		}
	}
	if err := applyLimits(v, &cfg); err != nil {
		return cfg, err
	}
	cfg.VaultAddr = v.GetString("vault_addr")
	if s := v.GetString("backup_interval"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return cfg, usagef("backup_interval: %q is not a positive duration", s)
		}
		cfg.BackupInterval = d
	}
	for _, d := range []struct {
		key  string
		dst  *time.Duration
		zero bool
	}{{"tidy_interval", &cfg.TidyInterval, false}, {"cert_retention", &cfg.CertRetention, true}} {
		if s := v.GetString(d.key); s != "" {
			x, err := time.ParseDuration(s)
			if err != nil || x < 0 || (x == 0 && !d.zero) {
				return cfg, usagef("%s: %q is not a valid duration", d.key, s)
			}
			*d.dst = x
		}
	}
	cfg.BackupDir = v.GetString("backup_dir")
	if s := v.GetString("backup_keep"); s != "" {
		k, err := strconv.Atoi(s)
		if err != nil || k < 1 {
			return cfg, usagef("backup_keep: %q is not a positive number", s)
		}
		cfg.BackupKeep = k
	}
	cfg.Dev = v.GetBool("dev")
	if cfg.Dev && !v.IsSet("vault_addr") {
		cfg.VaultAddr = devVaultAddr
	}
	if cfg.Dev {
		if cfg.DataDir == "" {
			cfg.DataDir = devDataDir
		}
		if cfg.NodeID == "" {
			cfg.NodeID = devNodeID
		}
		// The env file and the banner name files in it: absolute paths
		// work from any directory.
		if abs, err := filepath.Abs(cfg.DataDir); err == nil {
			cfg.DataDir = abs
		}
	}
	switch {
	case cfg.NodeID == "":
		return cfg, usagef("the node needs an ID: --node-id, CUSTOS_NODE_ID or node_id in the config file")
	case cfg.DataDir == "":
		return cfg, usagef("the node needs a data directory: --data-dir, CUSTOS_DATA_DIR or data_dir in the config file")
	}
	if err := cfg.Validate(); err != nil {
		return cfg, &usageError{err}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(v.GetString("log_level"))); err != nil {
		return cfg, usagef("log level %q: use debug, info, warn or error", v.GetString("log_level"))
	}
	cfg.Logger = slog.New(slog.NewTextHandler(logTo, &slog.HandlerOptions{Level: level}))
	return cfg, nil
}

// listSetting flattens a repeatable setting: each value may hold several,
// comma-separated; blanks and repeats are dropped.
func listSetting(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// serve starts the node and runs it until SIGINT or SIGTERM; SIGHUP
// reopens the audit log. A second SIGINT or SIGTERM while the node stops
// gives up waiting.
func (a *app) serve(ctx context.Context, cfg node.Config, out io.Writer) error {
	log := cfg.Logger
	sigs, stop := a.deps.signals()
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	type started struct {
		n   serverNode
		err error
	}
	startc := make(chan started, 1)
	go func() {
		n, err := a.deps.startNode(ctx, cfg)
		startc <- started{n, err}
	}()
	// Until the node has started, a signal cancels its start; a second one
	// gives up on it.
	var n serverNode
	stopping := false
	for n == nil {
		select {
		case st := <-startc:
			if st.err != nil {
				return fmt.Errorf("start the node: %w", st.err)
			}
			n = st.n
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGHUP:
			case stopping:
				return errors.New("stopped without waiting for the node to start")
			default:
				log.Info("stopping while the node starts", "signal", sig.String())
				stopping = true
				cancel()
			}
		}
	}

	if !stopping {
		if info := n.Dev(); info != nil {
			printDevBanner(out, n.APIURL(), cfg.DataDir, info)
		}
		log.Info("custos node is running", "node_id", cfg.NodeID, "api", n.APIURL())
		waitForStop(log, n, sigs)
	}
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	for {
		select {
		case err := <-closed:
			if err != nil {
				return fmt.Errorf("stop the node: %w", err)
			}
			log.Info("stopped")
			return nil
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				return errors.New("stopped without waiting for the node to close")
			}
		}
	}
}

// waitForStop returns at SIGINT or SIGTERM; SIGHUP reopens the audit log.
func waitForStop(log *slog.Logger, n serverNode, sigs <-chan os.Signal) {
	for sig := range sigs {
		if sig != syscall.SIGHUP {
			log.Info("stopping", "signal", sig.String())
			return
		}
		if err := n.Reopen(); err != nil {
			log.Error("reopen the audit log", "err", err)
		} else {
			log.Info("reopened the audit log")
		}
	}
}

// printDevBanner tells the user of a dev node how to reach it. The root
// token is shown: a dev node exists to be tried out.
func printDevBanner(w io.Writer, addr, dataDir string, info *node.DevInfo) {
	env := info.EnvFile
	if env == "" {
		env = filepath.Join(dataDir, "env")
	}
	t := newTable(w)
	t.text("custos is running in dev mode: one node, initialised and unsealed, with its data in %s.", dataDir)
	t.text("Do not use dev mode in production: the unseal key sits next to the data.")
	t.text("")
	t.kv("  Address", addr)
	t.kv("  Root token", info.RootToken)
	t.kv("  CA certificate", info.CACertPath)
	t.kv("  Env file", env)
	t.kv("  Unseal key file", info.UnsealKeyFile)
	t.text("")
	t.text("Try, in another shell:")
	t.text("  . %s", env)
	t.text("  custos status")
	t.text("  custos kms key create demo")
	t.text("  custos kms encrypt demo hello")
	_ = t.flush()
}

// parseDays parses a Go duration, or a whole number of days such as "90d".
func parseDays(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 100*365 {
			return 0, fmt.Errorf("bad number of days %q", days)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
