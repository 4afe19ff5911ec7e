package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/custos-pki/custos/api"
	"github.com/custos-pki/custos/audit"
	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/ca/stepca"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"github.com/custos-pki/custos/secrets"
	"github.com/prometheus/client_golang/prometheus"
)

// The cluster CA's kms key, init's defaults, and how long a status read waits.
// (The node's records in the sys table are declared in sysrecords.go.)
const (
	clusterCAKey   = "_custos-cluster-ca" // kms key name; the API refuses names starting with '_'
	defaultShares  = 5
	defaultThresh  = 3
	statusDeadline = 3 * time.Second
)

var _ api.Node = (*Node)(nil)

// Health reports what a load balancer needs, from this node's own view.
func (n *Node) Health(ctx context.Context) api.Health {
	h := api.Health{NodeID: n.cfg.NodeID, Version: Version, ServerTime: time.Now().UTC()}
	h.Sealed = n.barrier.Sealed()
	leaderID, _ := n.store.Leader()
	h.LeaderID, h.HasLeader = leaderID, leaderID != ""
	h.Standby = !n.store.IsLeader()
	h.Initialized = n.isInitialized(ctx)
	return h
}

// isInitialized is remembered once true; until then it asks the cluster
// (stale read: health must answer without a quorum).
func (n *Node) isInitialized(ctx context.Context) bool {
	if n.initialized.Load() {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, statusDeadline)
	defer cancel()
	st, err := n.barrier.Status(ctx)
	if err == nil && st.Initialized {
		n.initialized.Store(true)
	}
	return err == nil && st.Initialized
}

func (n *Node) sealStatus(st kms.SealStatus) api.SealStatus {
	return api.SealStatus{
		Initialized: st.Initialized, Sealed: st.Sealed, Type: st.Type,
		Shares: st.Shares, Threshold: st.Threshold, Progress: st.Progress, NodeID: n.cfg.NodeID,
	}
}

// SealStatus reports the seal of this node.
func (n *Node) SealStatus(ctx context.Context) (api.SealStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, statusDeadline)
	defer cancel()
	st, err := n.barrier.Status(ctx)
	if err != nil {
		return api.SealStatus{}, err
	}
	return n.sealStatus(st), nil
}

// Init initialises the cluster: the root key and its shares, the cluster
// CA, the audit key and a root token. The node is left sealed unless it
// has an unseal key file.
func (n *Node) Init(ctx context.Context, req api.InitRequest) (api.InitResponse, error) {
	cfg := kms.SealConfig{Shares: req.SecretShares, Threshold: req.SecretThreshold}
	if n.cfg.UnsealKeyFile != "" {
		if req.SecretShares != 0 || req.SecretThreshold != 0 {
			return api.InitResponse{}, fmt.Errorf("%w: this node auto-unseals from a key file: give no shares", ErrInvalid)
		}
		cfg = kms.SealConfig{KeyFile: n.cfg.UnsealKeyFile}
	} else if cfg.Shares == 0 && cfg.Threshold == 0 {
		cfg.Shares, cfg.Threshold = defaultShares, defaultThresh
	}
	res, err := n.barrier.Init(ctx, cfg)
	if err != nil {
		return api.InitResponse{}, err
	}
	n.initialized.Store(true)
	var resp api.InitResponse
	for _, sh := range res.Shares {
		resp.Keys = append(resp.Keys, hex.EncodeToString(sh))
	}
	// Unseal here, with the shares just made, to finish setting up.
	if cfg.KeyFile != "" {
		err = n.unsealKeyFile(ctx)
	} else {
		for _, sh := range res.Shares[:cfg.Threshold] {
			if _, err = n.barrier.Unseal(ctx, sh); err != nil {
				break
			}
		}
		if err == nil {
			_, err = n.activate(ctx)
		}
	}
	if err != nil {
		return api.InitResponse{}, fmt.Errorf("init: unseal: %w", err)
	}
	svc, err := n.Services()
	if err != nil {
		return api.InitResponse{}, err
	}
	caPEM, err := n.makeClusterCA(ctx, svc.KMS)
	if err != nil {
		return api.InitResponse{}, fmt.Errorf("init: cluster CA: %w", err)
	}
	resp.ClusterCACert = string(caPEM)
	if _, err := svc.CA.Init(ctx, ca.InitOptions{}); err != nil {
		return api.InitResponse{}, fmt.Errorf("init: certificate authority: %w", err)
	}
	if err := n.attachStep(ctx); err != nil {
		return api.InitResponse{}, fmt.Errorf("init: ACME: %w", err)
	}
	if resp.RootToken, _, err = svc.Auth.CreateRootToken(ctx, "root"); err != nil {
		return api.InitResponse{}, fmt.Errorf("init: root token: %w", err)
	}
	if cfg.KeyFile == "" {
		n.seal()
	}
	return resp, nil
}

// makeClusterCA creates the cluster CA key in kms, its certificate, and new
// certificates for this node signed by it, and switches to them.
func (n *Node) makeClusterCA(ctx context.Context, k *kms.KMS) ([]byte, error) {
	if _, err := k.CreateKey(ctx, clusterCAKey, kms.KeyOptions{Type: kms.KeyType("ecdsa-p256")}); err != nil {
		return nil, err
	}
	signer, err := k.Signer(ctx, clusterCAKey, 0)
	if err != nil {
		return nil, err
	}
	ca, err := newCACert(signer, "custos cluster CA", time.Now())
	if err != nil {
		return nil, err
	}
	if err := n.sys().putClusterCACert(ctx, pemCert(ca.Raw)); err != nil {
		return nil, err
	}
	if err := n.files.issueSet(ca, signer, n.cfg.NodeID, n.apiHosts(), time.Now()); err != nil {
		return nil, err
	}
	return pemCert(ca.Raw), n.reloadTLS()
}

// reloadTLS loads the TLS files again and puts them in use.
func (n *Node) reloadTLS() error {
	mat, err := n.files.load()
	if err != nil {
		return err
	}
	if err := n.store.SetTLS(raftstore.TLSMaterial{Certificate: mat.node, RootCAs: mat.pool}); err != nil {
		return err
	}
	n.mat.Store(mat)
	return nil
}

func parseShare(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) < 2 || len(b) > 256 {
		return nil, fmt.Errorf("%w: an unseal share is the hex string init printed", ErrInvalid)
	}
	return b, nil
}

// Unseal adds one share; the last one unseals this node.
func (n *Node) Unseal(ctx context.Context, req api.UnsealRequest) (api.SealStatus, error) {
	if req.Reset {
		n.barrier.ResetUnseal()
		return n.SealStatus(ctx)
	}
	share, err := parseShare(req.Key)
	if err != nil {
		return api.SealStatus{}, err
	}
	defer clear(share)
	st, err := n.barrier.Unseal(ctx, share)
	if err != nil {
		return api.SealStatus{}, err
	}
	if !st.Sealed {
		if _, err := n.activate(ctx); err != nil {
			return api.SealStatus{}, err
		}
	}
	return n.sealStatus(st), nil
}

func (n *Node) unsealKeyFile(ctx context.Context) error {
	if !n.barrier.Sealed() {
		return nil
	}
	if err := n.barrier.UnsealKeyFile(ctx, n.cfg.UnsealKeyFile); err != nil {
		return err
	}
	_, err := n.activate(ctx)
	return err
}

// Seal seals this node: keys are dropped from memory.
func (n *Node) Seal(context.Context) error {
	n.seal()
	return nil
}

func (n *Node) seal() {
	n.cer.reset()
	n.dropServices()
	n.barrier.Seal()
}

// Services returns the services of an unsealed node.
func (n *Node) Services() (*api.Services, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.svc != nil {
		return n.svc, nil
	}
	if !n.initialized.Load() {
		ctx, cancel := context.WithTimeout(context.Background(), statusDeadline)
		defer cancel()
		if st, err := n.barrier.Status(ctx); err == nil && !st.Initialized {
			return nil, ErrNotInitialized
		}
	}
	return nil, ErrSealed
}

// activation is one attempt to build an unsealed node's services. A step
// that holds something (a seal hook, the ACME server, the audit file, a key
// in memory) registers how to let it go; when a step fails, activate undoes
// the steps before it, newest first, and the node stays as it was.
type activation struct {
	k         *kms.KMS
	auth      *auth.Service
	auditKey  []byte
	authority *ca.CA
	step      *stepca.Server
	secrets   *secrets.Store
	audit     *audit.Logger
	undo      []func()
}

func (a *activation) onUndo(f func()) { a.undo = append(a.undo, f) }

func (a *activation) rollback() {
	for i := len(a.undo) - 1; i >= 0; i-- {
		a.undo[i]()
	}
	a.undo = nil
}

// activationStep is one step of an activation.
type activationStep struct {
	name string
	run  func(ctx context.Context, a *activation) error
}

// activationSteps are the steps that build the services, in order.
func (n *Node) activationSteps() []activationStep {
	return []activationStep{
		{"key manager", func(_ context.Context, a *activation) (err error) {
			if a.k, err = kms.New(n.barrier, kms.DefaultConfig()); err == nil {
				a.onUndo(a.k.Close)
			}
			return err
		}},
		{"audit key", func(ctx context.Context, a *activation) (err error) {
			if a.auditKey, err = n.auditKey(ctx); err == nil {
				a.onUndo(func() { clear(a.auditKey) })
			}
			return err
		}},
		{"API URL", func(ctx context.Context, _ *activation) error { return n.publishAPIURL(ctx) }},
		{"certificate authority", func(ctx context.Context, a *activation) (err error) {
			ccfg := ca.DefaultConfig()
			ccfg.Storage, ccfg.KMS, ccfg.IsLeader, ccfg.Logger = n.barrier, a.k, n.store.IsLeader, n.log
			ccfg.URLBase = n.pkiURLBase()
			ccfg.AfterRevoke = func(ctx context.Context, cert ca.Cert) error {
				if a.auth == nil { // activation failed after this step
					return nil
				}
				_, err := a.auth.RevokeCertTokens(ctx, cert.Certificate)
				return err
			}
			a.authority, err = ca.New(ctx, ccfg)
			return err
		}},
		{"auth", func(ctx context.Context, a *activation) (err error) {
			cfg := auth.DefaultConfig()
			cfg.Storage, cfg.Revocation = n.barrier, a.authority // certificate login refuses what the CA revoked
			a.auth, err = auth.New(ctx, cfg)
			return err
		}},
		{"ACME", func(ctx context.Context, a *activation) (err error) {
			if a.step, err = n.startStep(ctx, a.authority); err == nil && a.step != nil {
				step := a.step
				a.onUndo(func() { step.Close() })
			}
			return err
		}},
		{"secrets", func(ctx context.Context, a *activation) (err error) {
			scfg := secrets.DefaultConfig()
			scfg.Storage, scfg.Keys = n.barrier, a.k
			a.secrets, err = secrets.New(ctx, scfg)
			return err
		}},
		{"audit log", func(_ context.Context, a *activation) (err error) {
			acfg := audit.DefaultConfig()
			acfg.Path, acfg.HMACKey = n.cfg.AuditLog, a.auditKey
			if a.audit, err = audit.Open(acfg); err == nil {
				lg := a.audit
				a.onUndo(func() { lg.Close() })
			}
			return err
		}},
	}
}

// activate builds the services of a freshly unsealed node.
func (n *Node) activate(ctx context.Context) (*api.Services, error) {
	// A joined node proves that it holds the barrier keys before anything
	// here writes: until then the cluster refuses its writes.
	if err := n.proveKeys(ctx); err != nil {
		n.barrier.Seal()
		return nil, err
	}
	return n.activateWith(ctx, n.activationSteps())
}

// activateWith runs steps and, when all succeed, starts the background
// work and publishes the services; when one fails it undoes the others.
func (n *Node) activateWith(ctx context.Context, steps []activationStep) (*api.Services, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.svc != nil {
		return n.svc, nil
	}
	a := &activation{}
	for _, s := range steps {
		if err := s.run(ctx, a); err != nil {
			a.rollback()
			return nil, fmt.Errorf("activate: %s: %w", s.name, err)
		}
	}
	clear(a.auditKey) // the audit logger keeps its own copy
	k, authority, step := a.k, a.authority, a.step
	bg, cancel := context.WithCancel(context.Background())
	n.stopSvc = cancel
	n.wg.Add(4)
	go func() {
		defer n.wg.Done()
		k.Run(bg, func(err error) { n.log.Warn("kms maintenance", "error", err) })
	}()
	go func() {
		defer n.wg.Done()
		n.maintainCA(bg, authority)
	}()
	go func() {
		defer n.wg.Done()
		n.tidyTokens(bg, a.auth)
	}()
	go func() {
		defer n.wg.Done()
		n.maintainBarrier(bg)
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.tidyCerts(bg, authority, step)
	}()
	n.svc = &api.Services{KMS: k, Auth: a.auth, Audit: a.audit, CA: authority, Secrets: a.secrets}
	if step != nil {
		n.svc.Step, n.svc.ACME = step.Handler(), step
		n.step = step
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.collectACME(bg, step)
		}()
	}
	if err := n.startWorkload(ctx); err != nil {
		n.log.Error("workload API not started", "error", err)
	}
	n.initialized.Store(true)
	return n.svc, nil
}

func (n *Node) dropServices() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopSvc != nil {
		n.stopSvc()
		n.stopSvc = nil
	}
	if n.step != nil {
		n.step.Close()
		n.step = nil
	}
	n.stopWorkload()
	if n.svc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), statusDeadline)
		if err := n.svc.KMS.FlushUsage(ctx); err != nil {
			n.log.Warn("flushing key use counters", "error", err)
		}
		cancel()
		n.svc.Audit.Close()
		n.svc.KMS.Close() // else the barrier keeps its seal hook for ever
		n.svc = nil
	}
}

// auditKey returns the cluster's audit HMAC key, creating it once.
func (n *Node) auditKey(ctx context.Context) ([]byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	cur, fresh, err := n.sys().auditHMACKey(ctx, key)
	if !fresh {
		clear(key)
	}
	return cur, err
}

// attachStep starts step-ca on a node whose CA was just initialised.
func (n *Node) attachStep(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.svc == nil || n.step != nil {
		return nil
	}
	step, err := n.startStep(ctx, n.svc.CA)
	if err != nil || step == nil {
		return err
	}
	svc := *n.svc
	svc.Step, svc.ACME = step.Handler(), step
	n.svc, n.step = &svc, step
	return nil
}

// maintainCA renews the CRL when due (the CA does that on the leader only).
func (n *Node) maintainCA(ctx context.Context, c *ca.CA) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if err := c.Maintain(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("CA maintenance", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// tidyTokens removes expired tokens now and then, on the leader only.
func (n *Node) tidyTokens(ctx context.Context, a *auth.Service) {
	n.onLeaderEvery(ctx, 10*time.Minute, "token tidy", func(ctx context.Context) error {
		_, err := a.Tidy(ctx)
		return err
	})
}

func (n *Node) registerMetrics() error {
	sealed := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "custos_sealed", Help: "1 while this node is sealed."},
		func() float64 { return b2f(n.barrier.Sealed()) })
	leader := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "custos_raft_leader", Help: "1 while this node is the Raft leader."},
		func() float64 { return b2f(n.store.IsLeader()) })
	applied := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "custos_raft_applied_index", Help: "Index of the last entry applied on this node."},
		func() float64 { return float64(n.store.AppliedIndex()) })
	peers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "custos_raft_peers", Help: "Servers in the Raft configuration."},
		func() float64 { return float64(len(n.store.Status().Peers)) })
	readIndex := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "custos_raft_read_index_requests_total",
		Help: "Read-index requests this node sent to the leader for linearizable reads, while a follower."},
		func() float64 { return float64(n.store.ReadCounts().ReadIndexRequests) })
	sessionReads := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "custos_raft_session_reads_total",
		Help: "Linearizable reads answered with the read index an earlier read of the same request took."},
		func() float64 { return float64(n.store.ReadCounts().SessionReads) })
	for _, c := range []prometheus.Collector{sealed, leader, applied, peers, readIndex, sessionReads} {
		if err := n.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
