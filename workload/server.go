package workload

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/kms"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Clock tells the time; rotation is decided with it.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Issuer issues X.509-SVIDs and says what a role allows: *ca.CA.
type Issuer interface {
	RoleChecker
	Issue(ctx context.Context, role string, ir ca.IssueRequest) (*ca.Issued, error)
	ReadRole(ctx context.Context, name string) (ca.Role, error)
	Roots(ctx context.Context) ([]*x509.Certificate, error)
}

// Keys holds the JWT-SVID signing key: *kms.KMS.
type Keys interface {
	CreateKey(ctx context.Context, name string, o kms.KeyOptions) (kms.KeyInfo, error)
	Key(ctx context.Context, name string) (kms.KeyInfo, error)
	Signer(ctx context.Context, name string, version int) (crypto.Signer, error)
	PublicKey(ctx context.Context, name string, n int) (crypto.PublicKey, error)
}

// Entries lists the registration entries: *Registry.
type Entries interface {
	List(ctx context.Context) ([]Entry, error)
}

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// SocketPath is the Unix socket both APIs are served on. Required.
	SocketPath string
	Issuer     Issuer
	Keys       Keys
	Entries    Entries
	Clock      Clock
	Logger     *slog.Logger
	// Resync is how often streams look again for changed entries, roots
	// and JWT keys, and how long the entries read are used.
	Resync time.Duration
	// JWTSVIDTTL caps a JWT-SVID's lifetime (the role's TTL is used when
	// shorter).
	JWTSVIDTTL time.Duration
	// KeyType of the SVIDs' private keys.
	KeyType string
	// CallTimeout bounds one issuance or signing.
	CallTimeout time.Duration
}

// DefaultConfig returns the settings custos runs with.
func DefaultConfig() Config {
	return Config{
		Clock: systemClock{}, Logger: slog.Default(), Resync: 5 * time.Second,
		JWTSVIDTTL: 5 * time.Minute, KeyType: "ecdsa-p256", CallTimeout: 30 * time.Second,
	}
}

// Validate checks the fields, naming the one at fault.
func (c Config) Validate() error {
	switch {
	case c.SocketPath == "":
		return errors.New("workload: SocketPath is required")
	case c.Issuer == nil || c.Keys == nil || c.Entries == nil:
		return errors.New("workload: Issuer, Keys and Entries are required")
	case c.Clock == nil || c.Logger == nil:
		return errors.New("workload: Clock and Logger are required")
	case c.Resync <= 0:
		return errors.New("workload: Resync must be positive")
	case c.JWTSVIDTTL < time.Second:
		return errors.New("workload: JWTSVIDTTL must be at least 1s")
	case c.CallTimeout <= 0:
		return errors.New("workload: CallTimeout must be positive")
	}
	return nil
}

// Server serves the Workload API and SDS on one socket.
type Server struct {
	cfg   Config
	log   *slog.Logger
	grpc  *grpc.Server
	ln    net.Listener
	done  chan struct{}
	svids svidCache

	entMu     sync.Mutex
	entries   []Entry
	entriesAt time.Time
}

// New checks cfg; Start serves.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, done: make(chan struct{})}
	s.svids.slots = map[string]*svidSlot{}
	s.grpc = grpc.NewServer(
		grpc.Creds(peerCredentials{}),
		grpc.ChainUnaryInterceptor(s.unaryGuard),
		grpc.ChainStreamInterceptor(s.streamGuard),
		grpc.MaxRecvMsgSize(64<<10),
		grpc.MaxConcurrentStreams(100),
	)
	workloadpb.RegisterSpiffeWorkloadAPIServer(s.grpc, &workloadAPI{s: s})
	secretv3.RegisterSecretDiscoveryServiceServer(s.grpc, &sds{s: s})
	return s, nil
}

// Start listens on the socket, replacing a stale socket file left by an
// earlier run (never any other kind of file), and serves in the
// background. The socket is writable by everyone: who may have what is
// decided by the caller's credentials, not by file permissions.
func (s *Server) Start() error {
	p := s.cfg.SocketPath
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("workload: socket directory: %w", err)
	}
	if fi, err := os.Lstat(p); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return fmt.Errorf("workload: %s exists and is not a socket", p)
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("workload: remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", p)
	if err != nil {
		return fmt.Errorf("workload: listen: %w", err)
	}
	if err := os.Chmod(p, 0o777); err != nil {
		ln.Close()
		return fmt.Errorf("workload: socket permissions: %w", err)
	}
	s.ln = ln
	go func() {
		if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("workload API stopped", "error", err)
		}
	}()
	return nil
}

// Stop closes every stream and the socket, and forgets the SVIDs' keys.
func (s *Server) Stop() {
	close(s.done)
	s.grpc.Stop()
	if s.ln != nil {
		_ = os.Remove(s.cfg.SocketPath)
	}
	s.svids.clear()
}

// securityHeader is what every Workload API call must carry.
const securityHeader = "workload.spiffe.io"

func checkHeader(ctx context.Context, method string) error {
	if !strings.HasPrefix(method, "/SpiffeWorkloadAPI/") {
		return nil
	}
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok || len(md[securityHeader]) != 1 || md[securityHeader][0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

func (s *Server) unaryGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := checkHeader(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) streamGuard(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := checkHeader(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// now is the clock's time in UTC.
func (s *Server) now() time.Time { return s.cfg.Clock.Now().UTC() }

// currentEntries returns the entries, read at most every Resync.
func (s *Server) currentEntries(ctx context.Context) ([]Entry, error) {
	s.entMu.Lock()
	defer s.entMu.Unlock()
	if s.entries != nil && s.now().Sub(s.entriesAt) < s.cfg.Resync {
		return s.entries, nil
	}
	es, err := s.cfg.Entries.List(ctx)
	if err != nil && s.entries != nil {
		// No quorum: keep serving what was registered, as SPIRE's agent
		// does when its server is out of reach. Nothing new can be issued
		// without a quorum anyway.
		s.log.Warn("reading the registration entries failed; using the last ones read", "error", err)
		return s.entries, nil
	}
	if err != nil {
		return nil, err
	}
	s.entries, s.entriesAt = es, s.now()
	s.svids.prune(es)
	return es, nil
}

// matching returns the entries c satisfies, or PermissionDenied.
func (s *Server) matching(ctx context.Context, c *caller) ([]Entry, error) {
	es, err := s.currentEntries(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	var out []Entry
	for _, e := range es {
		if c.matchesAll(e) {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, status.Error(codes.PermissionDenied, "no identity issued: no registration entry matches the caller")
	}
	return out, nil
}

// toStatus maps an error from below to a gRPC status: the caller's
// mistakes and the registration's to PermissionDenied or InvalidArgument,
// the node's state (sealed, no leader, CA not initialised) to Unavailable.
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, ca.ErrNotInitialized), errors.Is(err, kms.ErrSealed):
		return status.Error(codes.Unavailable, "the certificate authority is not available on this node")
	case errors.Is(err, kms.ErrInvalid), errors.Is(err, kms.ErrForbidden), errors.Is(err, kms.ErrNotFound):
		return status.Errorf(codes.PermissionDenied, "the registration cannot be served: %v", err)
	}
	return status.Error(codes.Unavailable, "unavailable: try again")
}
