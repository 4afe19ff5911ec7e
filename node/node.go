// Package node assembles one custos node from its parts: the replicated
// store (raftstore), the key manager and its barrier (kms), the auth and
// audit services, and the HTTPS API. It owns the node's lifecycle: first
// start or join, init, unseal and seal, and shutdown.
//
// TLS: the cluster has its own CA, apart from the workload CA. A node that
// starts a new cluster signs its first certificates with a throwaway
// bootstrap CA; init replaces it with the cluster CA, whose key is a
// non-exportable kms key that never leaves the KMS. Joining nodes get their
// certificates from a member, after proving a one-time join token and
// checking the member against the pinned cluster CA fingerprint; they stay
// non-voters that may not write until, unsealed, they answer a challenge
// only the barrier keyring decrypts (join.go). Every node renews its own
// certificates at two thirds of their lifetime while unsealed (certs.go).
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/ca/stepca"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"github.com/custos-pki/custos/workload"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Version is the custos version reported by the API.
const Version = "0.1.0-dev"

// Node is one running custos node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	files   tlsFiles
	store   *raftstore.Store
	barrier *kms.Barrier
	mat     atomic.Pointer[material]
	reg     *prometheus.Registry
	http    *http.Server
	ln      net.Listener
	pkiHTTP *http.Server // plain-HTTP PKI listener, or nil
	pkiLn   net.Listener
	// the Vault API listener, or nil
	vaultHTTP *http.Server
	vaultLn   net.Listener

	mu      sync.Mutex
	svc     *api.Services
	stopSvc context.CancelFunc
	cer     ceremonies
	proxies leaderProxies
	peers   peerCache // cluster certificates of proxies that verified
	step    *stepca.Server

	workload *workload.Server // the Workload API and SDS socket, while unsealed

	initialized atomic.Bool
	restored    chan struct{} // signalled after a snapshot replaced the state
	dev         *DevInfo
	closing     chan struct{}
	closeOnce   sync.Once
	wg          sync.WaitGroup
}

// DevInfo is what a dev node tells its user.
type DevInfo struct {
	RootToken, CACertPath, EnvFile, UnsealKeyFile string
}

// Start starts a node: it joins a cluster or starts a new one on first
// start, reopens its state otherwise, and serves the API. A node starts
// sealed unless it has an unseal key file.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dev {
		if cfg.UnsealKeyFile == "" {
			cfg.UnsealKeyFile = filepath.Join(cfg.DataDir, "unseal.key")
		}
		if sock := filepath.Join(cfg.DataDir, "workload.sock"); cfg.WorkloadAPISocket == "" && len(sock) <= maxSocketPath {
			cfg.WorkloadAPISocket = sock
		}
	}
	if cfg.NodeCertTTL == 0 {
		cfg.NodeCertTTL = DefaultNodeCertTTL
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.APIAdvertise == "" {
		cfg.APIAdvertise = cfg.APIAddr
	}
	if cfg.ClusterAdvertise == "" {
		cfg.ClusterAdvertise = cfg.ClusterAddr
	}
	if cfg.AuditLog == "" {
		cfg.AuditLog = filepath.Join(cfg.DataDir, "audit.log")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), files: tlsFiles{dir: filepath.Join(cfg.DataDir, "tls"), ttl: cfg.NodeCertTTL}, reg: prometheus.NewRegistry(), closing: make(chan struct{}), restored: make(chan struct{}, 1)}
	if err := n.start(ctx); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(ctx context.Context) error {
	fresh := !n.files.exist()
	if fresh {
		var err error
		if n.cfg.JoinAddr != "" {
			err = n.requestJoin(ctx)
		} else {
			err = n.bootstrapTLS()
		}
		if err != nil {
			return err
		}
	}
	mat, err := n.files.load()
	if err != nil {
		return fmt.Errorf("node: TLS files: %w", err)
	}
	n.mat.Store(mat)

	rc := raftstore.DefaultConfig()
	rc.NodeID = n.cfg.NodeID
	rc.DataDir = filepath.Join(n.cfg.DataDir, "raft")
	rc.BindAddr = n.cfg.ClusterAddr
	rc.AdvertiseAddr = n.cfg.ClusterAdvertise
	rc.TLS = raftstore.TLSMaterial{Certificate: mat.node, RootCAs: mat.pool}
	rc.OnRestore = n.noteRestore
	rc.Admit = n.admitVoter
	rc.OrderedTables = append(ca.OrderedTables(), stepca.OrderedTables()...)
	out := n.cfg.RaftLog
	if out == nil {
		out = os.Stderr
	}
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: out})
	if n.cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout, rc.ElectionTimeout = n.cfg.HeartbeatTimeout, n.cfg.ElectionTimeout
		rc.LeaderLeaseTimeout = n.cfg.HeartbeatTimeout / 2
	}
	if n.store, err = raftstore.Open(rc); err != nil {
		return err
	}
	if fresh && n.cfg.JoinAddr == "" {
		if err := n.store.Bootstrap(); err != nil {
			return err
		}
	}
	if n.barrier, err = kms.NewBarrier(n.store, nil); err != nil {
		return err
	}
	n.wg.Add(1)
	go n.watchRestores()
	if n.cfg.BackupInterval > 0 {
		n.wg.Add(1)
		go n.runBackups()
	}
	n.wg.Add(1)
	go n.renewCerts()
	if err := n.registerMetrics(); err != nil {
		return err
	}
	if err := n.serveAPI(); err != nil {
		return err
	}
	if n.cfg.Dev {
		return n.devSetup(ctx)
	}
	if n.cfg.UnsealKeyFile != "" {
		n.wg.Add(1)
		go n.autoUnseal()
	}
	return nil
}

// bootstrapTLS makes the first node's certificates with a throwaway CA whose
// key is dropped at once; init replaces them with the cluster CA's.
func (n *Node) bootstrapTLS() error {
	key, err := newKey()
	if err != nil {
		return err
	}
	ca, err := newCACert(key, "custos bootstrap CA "+n.cfg.NodeID, time.Now())
	if err != nil {
		return err
	}
	return n.files.issueSet(ca, key, n.cfg.NodeID, n.apiHosts(), time.Now())
}

func (n *Node) apiHosts() []string {
	hosts := []string{"127.0.0.1", "localhost", n.cfg.NodeID}
	for _, a := range []string{n.cfg.APIAddr, n.cfg.APIAdvertise} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
			hosts = append(hosts, h)
		}
	}
	return append(hosts, n.cfg.APIHosts...)
}

func (n *Node) serveAPI() error {
	lim := n.cfg.Limits
	srv, err := api.New(api.Config{Node: n, Registry: n.reg, Logger: n.log, Limits: api.Limits{
		MaxInFlight: lim.MaxInFlight, MaxConnections: lim.MaxConnections, PublicPerIP: lim.PublicPerIP, TrustedPeer: n.clusterPeer,
	}})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", n.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("node: API listen: %w", err)
	}
	n.ln = ln
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &n.mat.Load().api, nil
		},
		// A client certificate is asked for but checked by the certificate
		// login role, not here: the API also serves clients without one.
		ClientAuth: tls.RequestClientCert,
	}
	n.http = &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      120 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ConnContext:       srv.ConnContext,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	n.serveHTTP("API", n.http, tls.NewListener(srv.Listener(ln), tlsCfg))
	if err := n.serveVault(srv, tlsCfg); err != nil {
		return err
	}
	return n.servePKI(srv)
}

// APIURL is the URL clients reach this node at.
func (n *Node) APIURL() string {
	if n.ln != nil {
		return "https://" + n.ln.Addr().String()
	}
	return "https://" + n.cfg.APIAdvertise
}

// ClusterAddr is the node's cluster port address.
func (n *Node) ClusterAddr() string { return n.store.Addr() }

// CACertPath is the file holding the cluster CA certificate.
func (n *Node) CACertPath() string { return n.files.path(caFile) }

// Dev returns what a dev node prints; nil for other nodes.
func (n *Node) Dev() *DevInfo { return n.dev }

// Reopen reopens the audit log (after rotation).
func (n *Node) Reopen() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.svc == nil || n.svc.Audit == nil {
		return nil
	}
	return n.svc.Audit.Reopen()
}

// Close stops the node gracefully: the API stops taking requests, a leader
// hands leadership over, and the files are flushed.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() {
		close(n.closing)
		for _, srv := range []*http.Server{n.http, n.pkiHTTP, n.vaultHTTP} {
			shutdownHTTP(srv)
		}
		n.dropServices()
		if n.barrier != nil {
			n.barrier.Seal()
		}
		if n.store != nil {
			err = n.store.Close()
		}
		n.wg.Wait()
	})
	return err
}

// autoUnseal unseals from the key file as soon as the cluster is reachable
// and initialised.
func (n *Node) autoUnseal() {
	defer n.wg.Done()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := n.unsealKeyFile(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-n.closing:
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// serveHTTP serves srv on ln in the background until it is shut down,
// logging a stop for any other reason; Close waits for it.
func (n *Node) serveHTTP(what string, srv *http.Server, ln net.Listener) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error(what+" server stopped", "error", err)
		}
	}()
}

// shutdownHTTP stops srv, if there is one, letting requests in flight
// finish for up to 5 seconds.
func shutdownHTTP(srv *http.Server) {
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}
