package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/ca/stepca"
	"github.com/custos-pki/custos/internal/ratelimit"
)

// Config configures one node. Start from DefaultConfig.
type Config struct {
	// NodeID is the node's Raft server ID and the name in its certificates.
	NodeID string
	// DataDir holds the Raft log, the state, snapshots, the node's TLS files
	// and the audit log.
	DataDir string
	// APIAddr is the HTTPS API listen address.
	APIAddr string
	// ClusterAddr is the node-to-node (Raft and forwarding) listen address.
	ClusterAddr string
	// APIAdvertise and ClusterAdvertise are the addresses other nodes and
	// clients use; they default to the listen addresses.
	APIAdvertise     string
	ClusterAdvertise string
	// APIHosts are extra DNS names or IP addresses for the API certificate
	// (the advertised host, 127.0.0.1 and localhost are always in it).
	APIHosts []string

	// Join, when JoinAddr is set, makes a new node join an existing cluster:
	// JoinAddr is an API address of a member (https://host:port), JoinToken
	// a one-time join token, and JoinCAFingerprint the hex SHA-256 of the
	// cluster CA certificate, which the member must chain to.
	JoinAddr          string
	JoinToken         string
	JoinCAFingerprint string

	// UnsealKeyFile, when set, unseals the node from this key file at start
	// (auto-unseal). In dev mode it is created if missing.
	UnsealKeyFile string
	// AuditLog is the audit log path; default DataDir/audit.log.
	AuditLog string

	// TidyInterval is how often the leader removes certificates that
	// expired more than CertRetention ago: custos' inventory records (see
	// ca.Tidy; a serial a current CRL lists stays) and step's records
	// of them (stepca.CollectCertificates). 0 means every hour.
	TidyInterval  time.Duration
	CertRetention time.Duration

	// ACME validation: the DNS server (host:port) the validator asks for
	// every lookup, the ports it connects to for http-01 and tls-alpn-01
	// (0: 80 and 443), and the URL ACME clients use (empty: each request's
	// host).
	ACMEResolver      string
	ACMEHTTP01Port    int
	ACMETLSALPN01Port int
	ACMEBaseURL       string
	// ACMEValidatorDeny are address ranges (CIDR, or one IP address) the
	// ACME validator does not connect to, besides link-local and
	// unspecified addresses and this node's own listen addresses, which it
	// never connects to. Other addresses, internal ones included, are
	// allowed.
	ACMEValidatorDeny []string

	// PKIHTTPAddr, when set, is the listen address of a plain-HTTP
	// listener that serves only the CA's public objects: roots, chain,
	// issuer certificates, CRLs and OCSP (RFC 5280 and 6960 relying parties
	// fetch them over http). PKIURLBase is the URL certificates point at
	// for OCSP, CA issuers and the CRL: default http://<PKIHTTPAddr> (with
	// the APIAdvertise host when PKIHTTPAddr has none), or without a
	// PKIHTTPAddr https://<APIAdvertise>. In a cluster, set it to a name
	// that reaches every node (a load balancer): certificates carry the
	// URLs of the node that issued them.
	PKIHTTPAddr string
	PKIURLBase  string

	// WorkloadAPISocket, when set, is the Unix socket of the SPIFFE
	// Workload API and Envoy SDS (package workload), served while the node
	// is unsealed. Dev nodes use DataDir/workload.sock.
	WorkloadAPISocket string

	// Limits are the node's rate limits and load-shedding caps.
	Limits Limits
	// VaultAddr, when set, is the listen address of the Vault-compatible
	// API (HTTPS, the API's certificate). It is also served under /vault/
	// on the API port.
	VaultAddr string

	// NodeCertTTL is the lifetime of the node's cluster and API
	// certificates, and of those it signs for joining nodes. A node renews
	// its own at two thirds of their lifetime while it is unsealed.
	NodeCertTTL time.Duration

	// Dev runs a one-node cluster that initialises and unseals itself.
	Dev bool

	// Scheduled backups: every BackupInterval (0: never) the leader writes a
	// backup into BackupDir and keeps the newest BackupKeep there.
	BackupInterval time.Duration
	BackupDir      string
	BackupKeep     int

	// Raft timing; zero values take raftstore's defaults.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration

	Logger *slog.Logger
	// RaftLog receives the Raft library's own log; nil means standard error.
	RaftLog io.Writer
}

// DefaultNodeCertTTL is the default lifetime of node certificates.
const DefaultNodeCertTTL = 90 * 24 * time.Hour

// Bounds of NodeCertTTL: long enough to renew with room to spare, no
// longer than the cluster CA.
const (
	minNodeCertTTL = 5 * time.Second
	maxNodeCertTTL = caValidity
)

// DefaultConfig returns the defaults: API on 127.0.0.1:8443, cluster port
// on 127.0.0.1:8444, no scheduled backups (24 kept when they are on),
// node certificates for 90 days.
func DefaultConfig() Config {
	return Config{
		APIAddr:     "127.0.0.1:8443",
		ClusterAddr: "127.0.0.1:8444",
		Limits:      DefaultLimits(),
		BackupKeep:  24,
		NodeCertTTL: DefaultNodeCertTTL,

		TidyInterval:  time.Hour,
		CertRetention: ca.DefaultCertRetention,
	}
}

// Limits cap what one node takes on. A zero field limits nothing.
type Limits struct {
	// MaxInFlight and MaxConnections cap the API's requests in flight and
	// open connections; past them a client gets 503 with Retry-After.
	MaxInFlight    int
	MaxConnections int
	// PublicPerIP limits the unauthenticated API routes that do work, per
	// client address (see api.Limits).
	PublicPerIP ratelimit.Limit
	// ACME are the ACME rate limits, kept on the leader, which serves ACME.
	ACME stepca.RateLimits
}

// DefaultLimits are api.DefaultLimits and stepca.DefaultRateLimits.
func DefaultLimits() Limits {
	a := api.DefaultLimits()
	return Limits{MaxInFlight: a.MaxInFlight, MaxConnections: a.MaxConnections, PublicPerIP: a.PublicPerIP, ACME: stepca.DefaultRateLimits()}
}

// Validate checks the fields.
func (l Limits) Validate() error {
	switch {
	case l.MaxInFlight < 0:
		return errors.New("node: max_in_flight must not be negative")
	case l.MaxConnections < 0:
		return errors.New("node: max_connections must not be negative")
	}
	if err := l.PublicPerIP.Validate(); err != nil {
		return fmt.Errorf("node: public_rate_limit %s: %w", l.PublicPerIP, err)
	}
	return l.ACME.Validate()
}

var nodeIDRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate checks the fields against each other, naming the one at fault.
func (c *Config) Validate() error {
	switch {
	case !nodeIDRE.MatchString(c.NodeID):
		return fmt.Errorf("node: node_id %q must be a DNS label (lowercase letters, digits, hyphens; up to 63)", c.NodeID)
	case c.DataDir == "":
		return errors.New("node: data_dir is required")
	}
	for name, addr := range map[string]string{"api_addr": c.APIAddr, "cluster_addr": c.ClusterAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("node: %s %q: %v", name, addr, err)
		}
	}
	if c.VaultAddr != "" {
		if _, _, err := net.SplitHostPort(c.VaultAddr); err != nil {
			return fmt.Errorf("node: vault_addr %q: %v", c.VaultAddr, err)
		}
	}
	if c.PKIHTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.PKIHTTPAddr); err != nil {
			return fmt.Errorf("node: pki_http_addr %q: %v", c.PKIHTTPAddr, err)
		}
		advertise := c.APIAdvertise
		if advertise == "" {
			advertise = c.APIAddr
		}
		if c.PKIURLBase == "" && !namesHost(c.PKIHTTPAddr) && !namesHost(advertise) {
			return fmt.Errorf("node: pki_url_base is required: neither pki_http_addr %q nor the API address %q names a host certificates could point at", c.PKIHTTPAddr, advertise)
		}
	}
	if c.PKIURLBase != "" {
		u, err := url.Parse(c.PKIURLBase)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("node: pki_url_base %q must be an absolute http or https URL without user, query or fragment", c.PKIURLBase)
		}
	}
	if _, err := c.validatorDeny(); err != nil {
		return err
	}
	if len(c.WorkloadAPISocket) > maxSocketPath {
		return fmt.Errorf("node: workload_api_socket %q is over %d bytes, too long for a Unix socket", c.WorkloadAPISocket, maxSocketPath)
	}
	if c.NodeCertTTL < minNodeCertTTL || c.NodeCertTTL > maxNodeCertTTL {
		return fmt.Errorf("node: node_cert_ttl %v must be between %v and %v", c.NodeCertTTL, minNodeCertTTL, maxNodeCertTTL)
	}
	if c.JoinAddr != "" && (c.JoinToken == "" || c.JoinCAFingerprint == "") {
		return errors.New("node: join_addr needs join_token and join_ca_fingerprint")
	}
	if c.Dev && c.JoinAddr != "" {
		return errors.New("node: a dev node cannot join a cluster")
	}
	switch {
	case c.BackupInterval < 0:
		return errors.New("node: backup_interval must not be negative")
	case c.BackupInterval > 0 && c.BackupDir == "":
		return errors.New("node: backup_interval needs backup_dir")
	case c.BackupInterval > 0 && c.BackupKeep < 1:
		return errors.New("node: backup_keep must be at least 1")
	case c.TidyInterval < 0:
		return errors.New("node: tidy_interval must not be negative")
	case c.CertRetention < 0:
		return errors.New("node: cert_retention must not be negative")
	}
	return c.Limits.Validate()
}

// namesHost reports whether addr (host:port) names a host other than the
// unspecified address.
func namesHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsUnspecified()
}

// validatorDeny parses ACMEValidatorDeny.
func (c *Config) validatorDeny() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.ACMEValidatorDeny {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			ip, ierr := netip.ParseAddr(s)
			if ierr != nil || ip.Zone() != "" {
				return nil, fmt.Errorf("node: acme_validator_deny %q: not a CIDR range or an IP address", s)
			}
			p = netip.PrefixFrom(ip, ip.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}

// boundAddrs are the addresses the node's listeners are bound to.
func (n *Node) boundAddrs() []string {
	var out []string
	for _, l := range []net.Listener{n.ln, n.pkiLn} {
		if l != nil {
			out = append(out, l.Addr().String())
		}
	}
	return out
}

// ownAddrs are the addresses the node listens and is reached on (the
// configured ones and the bound ones given), which the ACME validator must
// not connect to: an empty host is the unspecified address, and a name is
// resolved now, as far as it resolves.
func (c *Config) ownAddrs(ctx context.Context, bound ...string) []netip.AddrPort {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var out []netip.AddrPort
	for _, a := range append([]string{c.APIAddr, c.ClusterAddr, c.APIAdvertise, c.ClusterAdvertise, c.PKIHTTPAddr}, bound...) {
		host, ps, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		port, err := strconv.ParseUint(ps, 10, 16)
		if err != nil {
			continue
		}
		var ips []netip.Addr
		if host == "" {
			ips = []netip.Addr{netip.IPv6Unspecified()}
		} else if ip, err := netip.ParseAddr(host); err == nil {
			ips = []netip.Addr{ip}
		} else {
			ips, _ = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
		for _, ip := range ips {
			out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(port)))
		}
	}
	return out
}
