package stepca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"net/url"
	"time"

	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/kms"
)

// Sources of a recorded certificate: the path it was issued through.
const (
	SourceACME = "acme" // an ACME order, finalized
	SourceStep = "step" // step's API: a JWK provisioner token
	SourceREST = "rest" // custos' REST API, under a role (not step-ca)
)

// Recorder is told of every certificate step-ca issues, on every path (ACME
// finalize, step's /sign, /renew and /rekey), after it is signed and before
// it is handed out. role is the step provisioner's name; a renewal is
// recorded under the source and role of the certificate renewed (when the
// Recorder is an OriginTeller), so the policy that issued a certificate
// follows it through its renewals. An error fails the request, so a
// certificate that was not recorded is never delivered.
type Recorder interface {
	Record(ctx context.Context, cert *x509.Certificate, source, role string) error
}

// RevocationRecorder is an optional ability of a Recorder: it is told of
// every revocation step-ca performs (ACME revokeCert, step's /revoke), after
// step has stored it.
type RevocationRecorder interface {
	RecordRevocation(ctx context.Context, serial *big.Int, reasonCode int, reason string) error
}

// RevocationChecker is an optional ability of a Recorder: step-ca asks it,
// besides its own list, whether a certificate is revoked (before a renewal,
// and before an ACME revocation), so a certificate revoked elsewhere in
// custos can be neither renewed nor revoked twice.
type RevocationChecker interface {
	IsRevoked(ctx context.Context, serial *big.Int) (bool, error)
}

// Origin is what custos' inventory knows of a certificate it issued.
type Origin struct {
	Source  string // SourceACME, SourceStep or SourceREST
	Role    string // the ACME provisioner, step provisioner or REST role
	Revoked bool
}

// ErrNotRecorded is what an OriginTeller returns for a certificate it does
// not know.
var ErrNotRecorded = errors.New("stepca: certificate not recorded")

// OriginTeller is an optional ability of a Recorder: it tells where a
// certificate came from. Step's /renew and /rekey check a certificate
// against the policy that issued it, as that policy stands now; without an
// OriginTeller they refuse every certificate.
type OriginTeller interface {
	Origin(ctx context.Context, serial *big.Int) (Origin, error)
}

// RoleReader reads the REST roles of custos' CA (*ca.CA is one): a
// provisioner's role and a REST certificate's renewal are checked with it.
type RoleReader interface {
	ReadRole(ctx context.Context, name string) (ca.Role, error)
}

// Config is what New needs. Start from DefaultConfig.
type Config struct {
	// Storage is where step-ca's data lives: the kms Barrier, so every value
	// is encrypted at rest.
	Storage kms.Storage
	// Issuer returns the signer of the issuing CA and its chain, issuing
	// certificate first ([intermediate, root]). It is called for every
	// certificate, so a rotated intermediate is used at once.
	Issuer func(ctx context.Context) (crypto.Signer, []*x509.Certificate, error)
	// Roots returns the root certificates clients trust.
	Roots func(ctx context.Context) ([]*x509.Certificate, error)
	// Recorder is told of every certificate issued (required).
	Recorder Recorder
	// Template, if set, completes every certificate before it is linted
	// and signed, on every path, given the issuing certificate: custos sets
	// its AIA and CRL distribution point there, as its own issuance does. An
	// error refuses the issuance.
	Template func(ctx context.Context, tpl, issuer *x509.Certificate) error
	// Roles reads REST roles; nil: provisioners cannot name a role and
	// REST certificates cannot be renewed through step's API.
	Roles RoleReader
	// Linter, if set, checks every certificate before it is signed (a
	// complete template: issuer, serial, validity, key in PublicKey,
	// extensions), on every path; an error refuses the issuance, and ACME
	// clients get a badCSR problem naming it.
	Linter func(ctx context.Context, tpl *x509.Certificate) error
	// SignTemplate, if set, takes the place of Linter and of crypto/x509's
	// signing: it lints the certificate parent's key signs from the
	// complete template and signs exactly that with signer (Issuer's,
	// parent's key), building the TBSCertificate once (ca.CA.SignTemplate).
	// signer must check the signatures it makes, as custos's kms does: the
	// certificate is not verified again. An error wrapping ca.ErrInvalid
	// refuses the issuance as the Linter's errors do.
	SignTemplate func(ctx context.Context, tpl, parent *x509.Certificate, signer crypto.Signer) (*x509.Certificate, error)

	// BaseURL is the https URL ACME clients reach the CA at (a node or the
	// load balancer in front of the cluster), without a path: the ACME
	// directory links point there. Empty: links follow each request's Host.
	BaseURL string
	// DNSNames are further names clients reach the CA by; with BaseURL's
	// host and Hosts they are the hosts step tokens may name as audience.
	DNSNames []string
	// Hosts, if set, tells the hosts clients reach the CA by now (each
	// cluster member's API host): asked at every request of step's API and
	// ACME, so it must be cheap; a change rebuilds step's authority.
	Hosts func(ctx context.Context) ([]string, error)
	// FederatedRoots, if set, returns roots step's clients may trust
	// besides Roots (read once, in New): the CA that signs the API's TLS
	// certificates, so that `step ca bootstrap` may pin it.
	FederatedRoots func(ctx context.Context) ([]*x509.Certificate, error)

	// DNSResolver (host:port) receives every DNS query the ACME validator
	// makes: TXT for dns-01, A and AAAA for http-01 and tls-alpn-01. Empty:
	// the system resolver.
	DNSResolver string
	// HTTP01Port and TLSALPN01Port are the ports the validator connects to
	// for http-01 (80) and tls-alpn-01 (443).
	HTTP01Port    int
	TLSALPN01Port int
	// ValidationTimeout bounds one challenge validation.
	ValidationTimeout time.Duration
	// ValidatorDeny are address ranges the validator does not connect to,
	// besides AlwaysDenied (link-local and unspecified), for http-01 (after
	// every lookup and redirect) and tls-alpn-01, DNS names and IP
	// identifiers alike. Other addresses, internal ones included, are
	// allowed: internal services are what a private CA certifies.
	ValidatorDeny []netip.Prefix
	// ListenAddrs are this node's listen addresses (API, cluster, any
	// other), which the validator does not connect to; one on an
	// unspecified address (0.0.0.0, ::) stands for every address of the
	// host on its port.
	ListenAddrs []netip.AddrPort

	// ACMEProvisioner names the default ACME provisioner
	// (/acme/<name>/directory), made open (any name, wildcards) at the
	// first start of the cluster; after that it is managed as any other.
	ACMEProvisioner string
	// RequireEAB makes the default provisioner, when it is made, require an
	// external account binding.
	RequireEAB bool
	// JWKProvisioner names a JWK provisioner for the step CLI; empty: none.
	// Its key is made on first start, stored through Storage encrypted under
	// JWKPassword (which the CLI asks for), and reused after.
	JWKProvisioner string
	JWKPassword    []byte

	// DefaultCertDuration and MaxCertDuration bound the validity of issued
	// certificates.
	DefaultCertDuration time.Duration
	MaxCertDuration     time.Duration

	// RateLimits are the ACME rate limits (see RateLimits).
	RateLimits RateLimits

	// NonceLifetime is how long an ACME nonce stays usable.
	NonceLifetime time.Duration
	// MaxBodyBytes caps the body of an ACME request.
	MaxBodyBytes int64
	// StoreTimeout bounds each storage call step-ca makes.
	StoreTimeout time.Duration
	// Clock decides nonce expiry and what Collect deems old.
	Clock kms.Clock
}

// DefaultConfig returns the settings custos runs with; Storage, Issuer,
// Roots and Recorder are left to the caller.
func DefaultConfig() Config {
	return Config{
		HTTP01Port:          80,
		TLSALPN01Port:       443,
		ValidationTimeout:   10 * time.Second,
		ACMEProvisioner:     "acme",
		DefaultCertDuration: 24 * time.Hour,
		MaxCertDuration:     90 * 24 * time.Hour,
		RateLimits:          DefaultRateLimits(),
		NonceLifetime:       5 * time.Minute,
		MaxBodyBytes:        64 << 10,
		StoreTimeout:        30 * time.Second,
		Clock:               kms.SystemClock(),
	}
}

// Validate checks the fields against each other.
func (c Config) Validate() error {
	bad := func(field, why string) error { return fmt.Errorf("stepca: config: %s %s", field, why) }
	switch {
	case c.Storage == nil:
		return bad("Storage", "is nil")
	case c.Issuer == nil:
		return bad("Issuer", "is nil")
	case c.Roots == nil:
		return bad("Roots", "is nil")
	case c.Recorder == nil:
		return bad("Recorder", "is nil")
	case c.HTTP01Port < 1 || c.HTTP01Port > 65535:
		return bad("HTTP01Port", "must be 1 to 65535")
	case c.TLSALPN01Port < 1 || c.TLSALPN01Port > 65535:
		return bad("TLSALPN01Port", "must be 1 to 65535")
	case c.ValidationTimeout <= 0:
		return bad("ValidationTimeout", "must be positive")
	case c.ACMEProvisioner == "":
		return bad("ACMEProvisioner", "is empty")
	case c.ACMEProvisioner == c.JWKProvisioner:
		return bad("JWKProvisioner", "must differ from ACMEProvisioner")
	case c.JWKProvisioner != "" && len(c.JWKPassword) < 8:
		return bad("JWKPassword", "must be at least 8 bytes with a JWKProvisioner")
	case c.DefaultCertDuration < time.Minute:
		return bad("DefaultCertDuration", "must be at least a minute")
	case c.MaxCertDuration < c.DefaultCertDuration:
		return bad("MaxCertDuration", "is below DefaultCertDuration")
	case c.NonceLifetime < time.Second:
		return bad("NonceLifetime", "must be at least a second")
	case c.MaxBodyBytes < 4096:
		return bad("MaxBodyBytes", "must be at least 4096")
	case c.StoreTimeout <= 0:
		return bad("StoreTimeout", "must be positive")
	case c.Clock == nil:
		return bad("Clock", "is nil")
	}
	for _, p := range c.ValidatorDeny {
		if !p.IsValid() {
			return bad("ValidatorDeny", "holds an invalid prefix")
		}
	}
	for _, a := range c.ListenAddrs {
		if !a.IsValid() {
			return bad("ListenAddrs", "holds an invalid address")
		}
	}
	if err := c.RateLimits.Validate(); err != nil {
		return err
	}
	if c.BaseURL != "" {
		if _, err := parseBaseURL(c.BaseURL); err != nil {
			return bad("BaseURL", err.Error())
		}
	}
	return nil
}

func parseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, err
	case u.Scheme != "https":
		return nil, errors.New("must be an https URL")
	case u.Host == "":
		return nil, errors.New("has no host")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return nil, errors.New("must have no path, query or fragment")
	}
	return u, nil
}
