package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/custos-pki/custos/kms"
	"github.com/custos-pki/custos/raftstore"
	"github.com/zmap/zlint/v3/lint"
)

// Clock tells the time. Validity periods, expiry and CRL updates are
// decided with it, so tests can move it.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Tables the CA keeps, all through the barrier (values encrypted; keys,
// which hold serial numbers, role names and expiry times, are not).
const (
	tableState = "ca.state" // recState -> issuer state
	tableRoles = "ca.roles" // role name -> Role
	tableCerts = "ca.certs" // serial (lower hex) -> certificate record
	tableIndex = "ca.index" // exp/, role/, rev/ index entries
	tableCRL   = "ca.crl"   // issuer ID -> CRL head; dirty/<issuer ID> -> nonce; chunk/<issuer ID>/... -> CRL DER chunks
)

var tables = []string{tableState, tableRoles, tableCerts, tableIndex, tableCRL}

// OrderedTables returns the CA's tables whose keys grow with time (serials,
// see newSerial; expiry and role indexes), for raftstore.Config.
func OrderedTables() []string { return []string{tableCerts, tableIndex} }

// Names of the CA's keys in the KMS. A leading '_' hides them from the KMS
// HTTP API.
const (
	rootKeyName      = "_custos-ca-root"
	intKeyNamePrefix = "_custos-ca-int-"
)

// Config configures a CA. Start from DefaultConfig and set Storage, KMS and
// IsLeader.
type Config struct {
	// Storage keeps the CA's state: the kms Barrier, so that every value is
	// encrypted. Required.
	Storage kms.Storage
	// KMS holds the issuers' keys and signs with them. Required.
	KMS *kms.KMS
	// Clock decides validity, expiry and CRL updates.
	Clock Clock
	// IsLeader reports whether this node leads the cluster: only the leader
	// makes CRLs. Required.
	IsLeader func() bool
	// KeyType is the issuers' key type when InitOptions names none:
	// ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096.
	KeyType string
	// CommonName is the CA's name when InitOptions names none.
	CommonName string
	// RootTTL and IntermediateTTL are the issuers' lifetimes when
	// InitOptions gives none. Rotation reuses the intermediate lifetime.
	RootTTL, IntermediateTTL time.Duration
	// DefaultTTL and MaxTTL apply to roles that set none; MaxTTL also caps
	// every role's MaxTTL.
	DefaultTTL, MaxTTL time.Duration
	// Backdate moves NotBefore into the past to absorb clock skew.
	Backdate time.Duration
	// CRLValidity is nextUpdate - thisUpdate of a CRL; the leader remakes a
	// CRL when half of it has passed. OCSPValidity is the same for OCSP
	// responses.
	CRLValidity, OCSPValidity time.Duration
	// OCSPCacheSize bounds the OCSP responses a node keeps to serve again.
	OCSPCacheSize int
	// CacheTTL bounds how long a node uses the issuers it read before it
	// reads them again: a rotation made on another node takes effect here
	// within CacheTTL. It also bounds how stale an OCSP answer can be.
	CacheTTL time.Duration
	// URLBase, when set (http://pki.example.com or
	// https://custos.example:8200), puts the OCSP, CA issuers and CRL URLs
	// of the API into every leaf certificate: <URLBase>/v1/ca/ocsp,
	// /v1/ca/issuer/<issuer ID> and /v1/ca/crl/<issuer ID>.
	URLBase string
	// AfterRevoke, when set, is called on the node that revoked, after each
	// revocation that succeeded: the node revokes the tokens that logged in
	// with the certificate. An error is logged.
	AfterRevoke func(ctx context.Context, cert Cert) error
	// Logger reports what a caller cannot be told, such as a CRL that could
	// not be remade after a revocation that succeeded.
	Logger *slog.Logger
}

// DefaultConfig returns the settings custos runs with.
func DefaultConfig() Config {
	return Config{
		Clock:           systemClock{},
		KeyType:         string(kms.TypeECDSAP256),
		CommonName:      "custos CA",
		RootTTL:         10 * 365 * 24 * time.Hour,
		IntermediateTTL: 3 * 365 * 24 * time.Hour,
		DefaultTTL:      24 * time.Hour,
		MaxTTL:          90 * 24 * time.Hour,
		Backdate:        time.Minute,
		CRLValidity:     24 * time.Hour,
		OCSPValidity:    4 * time.Hour,
		OCSPCacheSize:   1 << 16,
		CacheTTL:        5 * time.Second,
		Logger:          slog.Default(),
	}
}

// Validate checks the fields against each other.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: config: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Storage == nil:
		return bad("Storage is required")
	case c.KMS == nil:
		return bad("KMS is required")
	case c.Clock == nil:
		return bad("Clock is required")
	case c.IsLeader == nil:
		return bad("IsLeader is required")
	case c.Logger == nil:
		return bad("Logger is required")
	case c.CommonName == "":
		return bad("CommonName is required")
	case c.RootTTL <= 0 || c.IntermediateTTL <= 0:
		return bad("RootTTL and IntermediateTTL must be positive")
	case c.IntermediateTTL > c.RootTTL:
		return bad("IntermediateTTL (%v) must not exceed RootTTL (%v)", c.IntermediateTTL, c.RootTTL)
	case c.DefaultTTL <= 0 || c.MaxTTL < c.DefaultTTL:
		return bad("DefaultTTL must be positive and MaxTTL at least DefaultTTL")
	case c.MaxTTL >= c.IntermediateTTL:
		return bad("MaxTTL (%v) must be below IntermediateTTL (%v)", c.MaxTTL, c.IntermediateTTL)
	case c.Backdate < 0 || c.Backdate > time.Hour:
		return bad("Backdate must be 0 to 1h")
	case c.CRLValidity < time.Minute || c.OCSPValidity < time.Minute:
		return bad("CRLValidity and OCSPValidity must be at least 1m")
	case c.CacheTTL <= 0:
		return bad("CacheTTL must be positive")
	case c.OCSPCacheSize <= 0:
		return bad("OCSPCacheSize must be positive")
	}
	if _, err := issuerKeyType(c.KeyType); err != nil {
		return bad("KeyType: %v", err)
	}
	if c.URLBase != "" {
		if u, err := url.Parse(c.URLBase); err != nil || u.Scheme == "" || u.Host == "" || u.RawQuery != "" {
			return bad("URLBase must be an absolute http(s) URL without a query")
		}
	}
	return nil
}

// CA is a certificate authority over the cluster's storage and KMS. It is
// safe for concurrent use, and every node runs one over the same state.
type CA struct {
	cfg   Config
	store kms.Storage
	kms   *kms.KMS
	clock Clock
	log   *slog.Logger
	lints lint.Registry
	// certLints runs the registry's certificate lints (lintrun.go).
	certLints []lintRunner

	mu       sync.Mutex
	cached   *issuers
	cachedAt time.Time

	crlMu sync.Mutex // one CRL generation at a time on this node
	crls  crlCache   // the DER of chunked CRLs read or made here
	ocsp  ocspCache  // OCSP responses made here

	signed signedHere // certificates SignTemplate signed, until recorded
}

// New validates cfg and creates the CA's tables (safe at every start, on
// every node, sealed or not).
func New(ctx context.Context, cfg Config) (*CA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, t := range tables {
		if err := cfg.Storage.CreateTable(ctx, t); err != nil {
			return nil, fmt.Errorf("ca: create table %s: %w", t, err)
		}
	}
	reg, err := lintRegistry()
	if err != nil {
		return nil, err
	}
	go p256SmallMultiples() // built before the first certificate needs it
	lintCfg := reg.GetConfiguration()
	return &CA{
		cfg: cfg, store: cfg.Storage, kms: cfg.KMS, clock: cfg.Clock, log: cfg.Logger,
		lints: reg, certLints: newLintRunners(withFastSmallKeyLint(reg.CertificateLints().Lints(), lintCfg), lintCfg),
	}, nil
}

// now is the clock's time in UTC, without a monotonic reading, to the
// second: certificates hold no finer times.
func (c *CA) now() time.Time { return c.clock.Now().UTC().Truncate(time.Second) }

// get reads a key, translating absence to found == false.
func (c *CA) get(ctx context.Context, table string, key []byte, opts ...raftstore.ReadOption) (v []byte, found bool, err error) {
	v, err = c.store.Get(ctx, table, key, opts...)
	if errors.Is(err, raftstore.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return v, true, nil
}

// listAll calls fn for every entry under prefix after after, a page at a
// time, until fn returns false.
func (c *CA) listAll(ctx context.Context, table string, prefix, after []byte, keysOnly bool, fn func(raftstore.KV) (bool, error)) error {
	o := raftstore.ListOptions{Prefix: prefix, After: after, KeysOnly: keysOnly, Limit: 256}
	for {
		page, err := c.store.List(ctx, table, o)
		if err != nil {
			return err
		}
		for _, kv := range page.Items {
			more, err := fn(kv)
			if err != nil || !more {
				return err
			}
		}
		if page.Next == nil {
			return nil
		}
		o.After = page.Next
	}
}
