package stepca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
	"github.com/smallstep/certificates/acme"
	acmeapi "github.com/smallstep/certificates/acme/api"
	acmenosql "github.com/smallstep/certificates/acme/db/nosql"
	stepapi "github.com/smallstep/certificates/api"
	"github.com/smallstep/certificates/api/render"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	stepdb "github.com/smallstep/certificates/db"
	"github.com/smallstep/certificates/errs"
)

// Server is step-ca embedded: its authority over custos storage and the
// issuer's kms key, its ACME server and its own API.
type Server struct {
	cfg     Config
	authDB  *authDB
	acmeDB  *acmeDB
	client  *validator
	linker  acme.Linker
	baseURL *url.URL // nil: links follow the request's Host
	locks   *objectLocks
	limits  *acmeLimits    // set by routes
	roots   *x509.CertPool // to verify client certificates
	inters  *x509.CertPool
	handler http.Handler

	// The ACME provisioners and step's authority made with them, replaced
	// as a whole when the provisioners change (see current).
	cur      atomic.Pointer[provState]
	reloadMu sync.Mutex
	jwk      *provisioner.JWK    // the step provisioner, or nil
	chain    []*x509.Certificate // the issuing chain, without roots
	rootList []*x509.Certificate
	// federated are further roots step's clients may trust (/federation,
	// /root/<sha256>): custos' cluster CA, which signs the API's TLS
	// certificates. They verify no client certificate here.
	federated []*x509.Certificate
}

// New starts step-ca over cfg.Storage. It creates step's tables (at every
// start, on every node: creating is idempotent), the nonce key and the JWK
// provisioner's key if they do not exist yet, and the authority. The roots
// and the issuer's chain are read once, here: after a rotation of either,
// make a new Server.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, locks: newObjectLocks()}
	if cfg.BaseURL != "" {
		s.baseURL, _ = parseBaseURL(cfg.BaseURL)
	}
	db, err := NewDB(cfg.Storage, cfg.StoreTimeout)
	if err != nil {
		return nil, err
	}
	if err := cfg.Storage.CreateTable(ctx, MetaTable); err != nil {
		return nil, fmt.Errorf("stepca: create table %s: %w", MetaTable, err)
	}
	if s.authDB, err = newAuthDB(db, cfg.Recorder, cfg.StoreTimeout); err != nil {
		return nil, err
	}
	adb, err := acmenosql.New(db) // creates the ACME tables
	if err != nil {
		return nil, fmt.Errorf("stepca: ACME database: %w", err)
	}
	key, err := nonceKey(ctx, cfg.Storage)
	if err != nil {
		return nil, err
	}
	for _, t := range []string{OrderIndexTable, ChainTable} {
		if err := cfg.Storage.CreateTable(ctx, t); err != nil {
			return nil, fmt.Errorf("stepca: create table %s: %w", t, err)
		}
	}
	s.acmeDB = &acmeDB{DB: adb, nonces: newNonces(key, cfg.NonceLifetime, cfg.Clock), raw: db}
	s.acmeDB.certs, _ = cfg.Recorder.(CertificateReader)
	s.acmeDB.parked = s.authDB.parked
	s.client = newValidator(cfg)
	s.linker = acme.NewLinker("", "/acme")
	if err := s.loadCA(ctx); err != nil {
		return nil, err
	}
	s.authDB.renewCheck, s.authDB.provisioner = s.checkRenewal, s.provisionerData
	for _, t := range []string{ProvisionerTable, JWKTable} {
		if err := cfg.Storage.CreateTable(ctx, t); err != nil {
			return nil, fmt.Errorf("stepca: create table %s: %w", t, err)
		}
	}
	if err := s.ensureDefault(ctx); err != nil {
		return nil, err
	}
	if _, err := s.reload(ctx); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// loadCA reads the roots, the issuing chain and the JWK provisioner's key.
func (s *Server) loadCA(ctx context.Context) error {
	cfg := s.cfg
	roots, err := cfg.Roots(ctx)
	if err != nil {
		return fmt.Errorf("stepca: roots: %w", err)
	}
	if len(roots) == 0 {
		return errors.New("stepca: Roots returned no certificate")
	}
	_, chain, err := cfg.Issuer(ctx)
	if err != nil {
		return fmt.Errorf("stepca: issuer: %w", err)
	}
	intermediates := issuingChain(chain)
	if len(intermediates) == 0 {
		return errors.New("stepca: Issuer returned no issuing certificate")
	}
	if cfg.FederatedRoots != nil {
		if s.federated, err = cfg.FederatedRoots(ctx); err != nil {
			return fmt.Errorf("stepca: federated roots: %w", err)
		}
	}
	s.rootList, s.chain = roots, intermediates
	s.roots, s.inters = x509.NewCertPool(), x509.NewCertPool()
	for _, c := range roots {
		s.roots.AddCert(c)
	}
	for _, c := range intermediates {
		s.inters.AddCert(c)
	}
	if cfg.JWKProvisioner != "" {
		pub, enc, err := provisionerJWK(ctx, cfg.Storage, cfg.JWKProvisioner, cfg.JWKPassword)
		if err != nil {
			return err
		}
		s.jwk = &provisioner.JWK{Type: provisioner.TypeJWK.String(), Name: cfg.JWKProvisioner, Key: pub, EncryptedKey: enc}
	}
	return nil
}

// newAuthority makes step's authority: the provisioners, the roots, the
// issuing CAS and the database.
func (s *Server) newAuthority(provs []ACMEProvisioner, jwks []JWKProvisioner, hosts []string) (*authority.Authority, error) {
	cfg := s.cfg
	off := false
	c := &config.Config{
		DNSNames: hosts,
		AuthorityConfig: &config.AuthConfig{
			Provisioners: s.stepProvisioners(provs, jwks),
			Claims: &provisioner.Claims{
				MaxTLSDur:     &provisioner.Duration{Duration: cfg.MaxCertDuration},
				DefaultTLSDur: &provisioner.Duration{Duration: cfg.DefaultCertDuration},
				EnableSSHCA:   &off,
			},
		},
	}
	cas := &issuingCAS{issuer: cfg.Issuer, template: cfg.Template, lint: cfg.Linter, signTemplate: cfg.SignTemplate, clock: cfg.Clock, timeout: cfg.StoreTimeout, check: s.checkIssue}
	a, err := authority.NewEmbedded(
		authority.WithConfig(c),
		authority.WithX509RootCerts(s.rootList...),
		authority.WithX509IntermediateCerts(s.chain...),
		authority.WithX509FederatedCerts(s.federated...),
		authority.WithX509CAService(cas),
		authority.WithDatabase(s.authDB),
		authority.WithQuietInit(),
	)
	if err != nil {
		return nil, fmt.Errorf("stepca: authority: %w", err)
	}
	return a, nil
}

// audienceHosts are the hosts step tokens may name in their audience:
// DNSNames, BaseURL's host and those Config.Hosts tells now, sorted and
// without repeats. None: step's default (localhost, 127.0.0.1, ::1).
func (s *Server) audienceHosts(ctx context.Context) ([]string, error) {
	names := append([]string(nil), s.cfg.DNSNames...)
	if s.baseURL != nil {
		names = append(names, s.baseURL.Hostname())
	}
	if s.cfg.Hosts != nil {
		more, err := s.cfg.Hosts(ctx)
		if err != nil {
			return nil, fmt.Errorf("stepca: hosts: %w", err)
		}
		names = append(names, more...)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == "" })
	if len(names) == 0 {
		return nil, nil
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// Close stops the authority's background work. The storage stays open.
// (Authorities replaced by a reload have none: step starts background work
// only for CRLs, which custos makes itself.)
func (s *Server) Close() error { return s.state().auth.Shutdown() }

// Authority returns step's authority, for the revocations and lookups the
// HTTP API does not cover. A change of the provisioners replaces it.
func (s *Server) Authority() *authority.Authority { return s.state().auth }

// Paths are the URL path prefixes Handler serves: ACME under /acme/, step's
// API under /1.0/ and at the root paths step's CLI uses.
func (s *Server) Paths() []string {
	return []string{
		"/acme/", "/1.0/", "/version", "/health", "/root/", "/sign", "/renew",
		"/rekey", "/revoke", "/provisioners", "/provisioners/", "/roots", "/roots.pem",
		"/intermediates", "/intermediates.pem", "/federation",
	}
}

// Handler serves ACME at /acme/<provisioner>/... and step's API at /1.0/...
// and at the root paths (see Paths). It works on whichever node serves it,
// but custos must route every /acme request to the leader (see objectLocks
// and nonces); step's API may be served anywhere.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.withContext)
	r.Route("/acme", func(r chi.Router) {
		s.limits = s.newACMELimits()
		r.Use(s.withBaseURL, s.lockObject, s.limits.middleware, s.orderPolicy)
		acmeapi.Route(r)
	})
	r.Group(func(r chi.Router) {
		r.Use(s.verifiedPeer, s.renewalGate, s.signGate)
		r.Route("/1.0", func(r chi.Router) { stepapi.Route(r) })
		stepapi.Route(r)
	})
	return r
}

// verifiedPeer hides from step's API a client certificate that does not
// chain to the roots. Step's /renew and /rekey trust the TLS peer
// certificate as given, relying on the server to have verified it; custos'
// listener may only have asked for one.
func (s *Server) verifiedPeer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		inters := s.inters.Clone()
		for _, c := range r.TLS.PeerCertificates[1:] {
			inters.AddCert(c)
		}
		_, err := r.TLS.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: s.roots, Intermediates: inters, CurrentTime: s.cfg.Clock.Now(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			cs := *r.TLS
			cs.PeerCertificates, cs.VerifiedChains = nil, nil
			r = r.WithContext(r.Context()) // a shallow copy
			r.TLS = &cs
		}
		next.ServeHTTP(w, r)
	})
}

// withContext puts in the request context what step-ca's handlers read
// from it: the authority (as the provisioners stand now), its database,
// and the ACME database, validator client and linker. It is the only place
// they are set.
func (s *Server) withContext(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := s.current(r.Context())
		if err != nil {
			render.Error(w, r, errs.Wrap(http.StatusServiceUnavailable, err, "stepca: provisioners"))
			return
		}
		ctx := authority.NewContext(r.Context(), st.auth)
		ctx = stepdb.NewContext(ctx, s.authDB)
		ctx = acme.NewContext(ctx, s.acmeDB, s.client, s.linker, nil)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// withBaseURL makes step-ca build its ACME links (and check the url of each
// JWS) on BaseURL's host, whichever host the request came to.
func (s *Server) withBaseURL(next http.Handler) http.Handler {
	if s.baseURL == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r2 := r.WithContext(r.Context()) // a shallow copy
		r2.Host = s.baseURL.Host
		next.ServeHTTP(w, r2)
	})
}
