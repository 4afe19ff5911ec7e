package auth

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// Storage is what auth needs from the store below it. *raftstore.Store
// satisfies it, and so does the kms barrier, which encrypts every value.
type Storage interface {
	CreateTable(ctx context.Context, name string) error
	// Get returns raftstore.ErrNotFound when the key is absent.
	Get(ctx context.Context, table string, key []byte, opts ...raftstore.ReadOption) ([]byte, error)
	Put(ctx context.Context, table string, key, value []byte) error
	Delete(ctx context.Context, table string, key []byte) error
	Txn(ctx context.Context, ops []raftstore.Op) (raftstore.TxnResult, error)
	List(ctx context.Context, table string, o raftstore.ListOptions, opts ...raftstore.ReadOption) (raftstore.ListPage, error)
}

var _ Storage = (*raftstore.Store)(nil)

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Tables auth keeps. Keys that could reveal a token are never used: the
// token table is keyed by the token's SHA-256.
const (
	tableTokens    = "auth.tokens"    // sha256(token) -> token record
	tableAccessors = "auth.accessors" // accessor -> sha256(token)
	tableChildren  = "auth.children"  // parent accessor "/" child accessor -> sha256(child)
	tablePolicies  = "auth.policies"  // policy name -> document as written
	tableRoles     = "auth.certroles" // role name -> CertRole JSON
	tableMeta      = "auth.meta"      // policyVersionKey -> random version
	tableCertToks  = "auth.certtoks"  // certificate ID "/" accessor -> sha256(token), for tokens from certificate login
)

var tables = []string{tableTokens, tableAccessors, tableChildren, tablePolicies, tableRoles, tableMeta, tableCertToks}

// Config configures a Service.
type Config struct {
	// Storage keeps tokens, policies and roles. Required.
	Storage Storage
	// Clock decides expiry; nil means the system clock.
	Clock Clock
	// DefaultTTL is the lifetime of a token created without one.
	DefaultTTL time.Duration
	// MaxTTL caps the lifetime of every token but root tokens, renewals
	// included.
	MaxTTL time.Duration
	// Revocation, when set, is asked about every client certificate that
	// passes the other checks of a certificate login; a revoked one is
	// refused, and so is every login while it fails (fail closed).
	Revocation RevocationChecker
	// CRLClient fetches the CRLs that certificate roles name (crl_url);
	// nil means a client of its own. CRLTimeout bounds one fetch (0: 10 s)
	// and MaxCRLSize the bytes read (0: 16 MiB).
	CRLClient  *http.Client
	CRLTimeout time.Duration
	MaxCRLSize int64
}

// RevocationChecker tells whether a verified client certificate was
// revoked by its issuer. The node gives one backed by custos's own CA
// inventory; it reports false for a certificate it knows nothing about.
type RevocationChecker interface {
	Revoked(ctx context.Context, cert *x509.Certificate) (bool, error)
}

// DefaultConfig returns a Config with a 24-hour default and a 32-day
// maximum token lifetime; the caller sets Storage.
func DefaultConfig() Config {
	return Config{DefaultTTL: 24 * time.Hour, MaxTTL: 32 * 24 * time.Hour}
}

// Validate checks the fields against each other.
func (c Config) Validate() error {
	switch {
	case c.Storage == nil:
		return errors.New("auth: config: Storage is required")
	case c.DefaultTTL <= 0:
		return fmt.Errorf("auth: config: DefaultTTL must be positive, got %v", c.DefaultTTL)
	case c.MaxTTL < c.DefaultTTL:
		return fmt.Errorf("auth: config: MaxTTL (%v) must be at least DefaultTTL (%v)", c.MaxTTL, c.DefaultTTL)
	case c.CRLTimeout < 0 || c.MaxCRLSize < 0:
		return errors.New("auth: config: CRLTimeout and MaxCRLSize must not be negative")
	}
	return nil
}

// Service manages tokens, policies and certificate-login roles. It is safe
// for concurrent use; all state is in Storage except the Authorizer's cache.
type Service struct {
	cfg   Config
	store Storage
	clock Clock
	authz *Authorizer
	crls  crlCache // the CRLs of certificate roles, by URL
	// decoded caches the decoding of token records (auth/tokencache.go).
	decoded decodeCache
}

// New validates cfg and creates the tables auth needs (safe at every start,
// on every node).
func New(ctx context.Context, cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.CRLTimeout == 0 {
		cfg.CRLTimeout = 10 * time.Second
	}
	if cfg.MaxCRLSize == 0 {
		cfg.MaxCRLSize = 16 << 20
	}
	if cfg.CRLClient == nil {
		cfg.CRLClient = &http.Client{Timeout: cfg.CRLTimeout}
	}
	for _, t := range tables {
		if err := cfg.Storage.CreateTable(ctx, t); err != nil {
			return nil, fmt.Errorf("auth: create table %s: %w", t, err)
		}
	}
	s := &Service{cfg: cfg, store: cfg.Storage, clock: cfg.Clock}
	s.authz = newAuthorizer(s)
	return s, nil
}

// Authorizer returns the Service's policy checker.
func (s *Service) Authorizer() *Authorizer { return s.authz }

// now is the clock's time in UTC without a monotonic reading, so that it
// round-trips through JSON unchanged.
func (s *Service) now() time.Time { return s.clock.Now().UTC().Round(0) }

// get reads a key, translating absence to found == false.
func (s *Service) get(ctx context.Context, table string, key []byte, opts ...raftstore.ReadOption) (v []byte, found bool, err error) {
	v, err = s.store.Get(ctx, table, key, opts...)
	if errors.Is(err, raftstore.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

// listAll calls fn for every entry under prefix, a page at a time.
func (s *Service) listAll(ctx context.Context, table string, prefix []byte, keysOnly bool, fn func(raftstore.KV) error) error {
	o := raftstore.ListOptions{Prefix: prefix, KeysOnly: keysOnly, Limit: 256}
	for {
		page, err := s.store.List(ctx, table, o)
		if err != nil {
			return fmt.Errorf("auth: list %s: %w", table, err)
		}
		for _, kv := range page.Items {
			if err := fn(kv); err != nil {
				return err
			}
		}
		if page.Next == nil {
			return nil
		}
		o.After = page.Next
	}
}
