package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/custos-pki/custos/audit"
	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/ca/stepca"
	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/secrets"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Services are what an unsealed node offers. The node hands out a new set
// after each unseal.
type Services struct {
	KMS     *kms.KMS
	Auth    *auth.Service
	Audit   *audit.Logger
	Secrets *secrets.Store
	CA      *ca.CA
	// Step serves ACME and step-ca's API, and ACME makes EAB keys; both nil
	// until the CA is initialised.
	Step http.Handler
	ACME *stepca.Server
	// Workloads are the SPIFFE registration entries.
	Workloads WorkloadRegistry
}

// Node is the running node as the API sees it: the narrow interfaces
// below, each the part of the node one group of routes uses.
type Node interface {
	Lifecycle
	Ceremonies
	Keyring
	Cluster
}

// ServiceSource gives the services of an unsealed node: all that the route
// tables over the services (auth, kms, CA, secrets, the Vault API) use.
type ServiceSource interface {
	// Services returns the services of an unsealed node, or an error
	// matching kms.ErrSealed or ErrNotInitialized.
	Services() (*Services, error)
}

// Lifecycle is the node's init, unseal and seal, and its health.
type Lifecycle interface {
	ServiceSource
	Health(ctx context.Context) Health
	SealStatus(ctx context.Context) (SealStatus, error)
	Init(ctx context.Context, req InitRequest) (InitResponse, error)
	Unseal(ctx context.Context, req UnsealRequest) (SealStatus, error)
	Seal(ctx context.Context) error
}

// Ceremonies (kind: CeremonyGenerateRoot, CeremonyRekey or
// CeremonyRotateRoot) run on the node that started them.
type Ceremonies interface {
	CeremonyInit(ctx context.Context, kind string, req CeremonyRequest) (CeremonyStatus, error)
	CeremonyStatus(ctx context.Context, kind string) (CeremonyStatus, error)
	CeremonyUpdate(ctx context.Context, kind string, req CeremonyRequest) (CeremonyStatus, error)
	CeremonyCancel(ctx context.Context, kind string, req CeremonyRequest) error
}

// Keyring is the barrier keyring: its status, a rotation, and when it
// rotates by itself.
type Keyring interface {
	KeyStatus(ctx context.Context) (KeyStatus, error)
	RotateKeyring(ctx context.Context) (KeyStatus, error)
	RotationConfig(ctx context.Context) (RotationConfig, error)
	SetRotationConfig(ctx context.Context, c RotationConfig) (RotationConfig, error)
}

// Cluster is the Raft cluster: peers, snapshots, joining.
type Cluster interface {
	RaftStatus(ctx context.Context) (RaftStatus, error)
	RemovePeer(ctx context.Context, id string) error
	StepDown(ctx context.Context) error
	SnapshotSave(ctx context.Context, w io.Writer) error
	// SnapshotRestore replaces the cluster's state with a backup; force
	// lets a backup from another cluster in.
	SnapshotRestore(ctx context.Context, r io.Reader, force bool) error
	CreateJoinToken(ctx context.Context, req JoinTokenRequest) (JoinTokenResponse, error)
	// LeaderProxy returns a handler forwarding to the leader's API, or nil
	// on the leader.
	LeaderProxy(ctx context.Context) (http.Handler, error)
	Join(ctx context.Context, req JoinRequest) (JoinResponse, error)
}

// Config configures the API server.
type Config struct {
	Node         Node
	MaxBodyBytes int64
	Registry     *prometheus.Registry // nil: a new registry
	Logger       *slog.Logger
	// Limits shed load; the zero value limits nothing.
	Limits Limits
}

// Server is the HTTP handler of one node.
type Server struct {
	node    Node
	maxBody int64
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *httpMetrics
	shed    *shedder
	mux     *chi.Mux
	vault   *chi.Mux
}

// New builds the router.
func New(cfg Config) (*Server, error) {
	if cfg.Node == nil {
		return nil, errors.New("api: Node is required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{node: cfg.Node, maxBody: cfg.MaxBodyBytes, log: cfg.Logger, reg: cfg.Registry}
	m, err := newHTTPMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	if s.shed, err = newShedder(cfg.Limits, cfg.Registry); err != nil {
		return nil, err
	}
	s.mux = chi.NewRouter()
	s.mux.Use(s.recoverer, s.begin, s.shed.middleware)
	s.mux.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, Errorf(http.StatusNotFound, CodeNotFound, "no route for %s", r.URL.Path))
	})
	s.mux.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, Errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
	})
	for _, rt := range s.routes() {
		s.mux.Method(rt.method, rt.pattern, s.wrap(rt))
	}
	s.vault = s.newVaultRouter()
	s.mux.Handle(VaultPrefix+"/*", s.vaultEntry(VaultPrefix))
	s.mountStep()
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Routes lists every route: method, pattern and whether it needs a token.
// Tests use it to prove that every route but the public ones is denied
// without one.
func (s *Server) Routes() []RouteInfo {
	var out []RouteInfo
	for _, rt := range s.routes() {
		out = append(out, RouteInfo{Method: rt.method, Pattern: rt.pattern, Public: rt.public})
	}
	return out
}

// RouteInfo describes one route.
type RouteInfo struct {
	Method, Pattern string
	Public          bool
}

// route is one endpoint: what it needs and how it is served.
type route struct {
	method  string
	pattern string
	// public routes need no token; all others need one whose policies
	// grant cap on the policy path (the URL path without "/v1/").
	public bool
	cap    auth.Capability
	// capOf, when set, picks the capability from the request (a listing
	// needs list where a read of the same path needs read).
	capOf func(r *http.Request) auth.Capability
	// op names the operation in the audit log.
	op string
	// raw bodies (snapshots) are streamed: not buffered, not audited.
	raw bool
	// policy, when set, names the policy path the route is checked
	// against (a Vault path is checked as the native path it maps to).
	policy func(r *http.Request) string
	// anyToken routes need a valid token but no capability.
	anyToken bool
	// guarded routes are authorised from this node's state and their
	// handler's one write proves it at its commit (secrets.WithGuard).
	guarded bool
	h       func(w http.ResponseWriter, r *http.Request)
}

func (s *Server) routes() []route {
	var rs []route
	rs = append(rs, s.sysRoutes()...)
	rs = append(rs, s.authRoutes()...)
	rs = append(rs, s.kmsRoutes()...)
	rs = append(rs, s.caRoutes()...)
	rs = append(rs, s.workloadRoutes()...)
	rs = append(rs, s.pkiRoutes()...)
	rs = append(rs, s.acmeRoutes()...)
	rs = append(rs, s.secretsRoutes()...)
	rs = append(rs, route{method: http.MethodGet, pattern: "/v1/sys/metrics", cap: auth.CapRead, op: "metrics",
		h: promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}).ServeHTTP})
	return rs
}

func (s *Server) services(w http.ResponseWriter, r *http.Request) (*Services, bool) {
	svc, err := s.node.Services()
	if err != nil {
		writeError(w, r, err)
		return nil, false
	}
	return svc, true
}
