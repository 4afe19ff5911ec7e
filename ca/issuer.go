package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custos-pki/custos/kms"
)

// recState is the key of the issuers' state in tableState.
var recState = []byte("state")

// state is everything about the issuers, stored as one record so that every
// change is a single compare-and-swap.
type state struct {
	CommonName      string        `json:"common_name"`
	KeyType         kms.KeyType   `json:"key_type"`
	IntermediateTTL time.Duration `json:"intermediate_ttl"`
	// RootKey is the KMS key of the root, or "" when the root is external.
	RootKey string `json:"root_key,omitempty"`
	// Active is the ID of the intermediate that signs; "" before Init.
	Active string `json:"active,omitempty"`
	// Issuers are the active and the retired intermediates.
	Issuers []issuerRecord `json:"issuers,omitempty"`
	// Pending is a key waiting for an externally signed certificate.
	Pending *pendingKey `json:"pending,omitempty"`
	// Next numbers the next intermediate key.
	Next int `json:"next"`
}

type issuerRecord struct {
	ID         string    `json:"id"`
	Key        string    `json:"key"`
	KeyVersion int       `json:"key_version"`
	Chain      [][]byte  `json:"chain"` // DER, the intermediate first, the root last
	Retired    time.Time `json:"retired,omitzero"`
}

type pendingKey struct {
	ID         string `json:"id"`
	Key        string `json:"key"`
	KeyVersion int    `json:"key_version"`
	CommonName string `json:"common_name"`
}

// issuer is a parsed intermediate.
type issuer struct {
	id         string
	key        string
	keyVersion int
	cert       *x509.Certificate
	chain      []*x509.Certificate // cert first, root last
	retired    bool
}

// issuers is the parsed state, as cached.
type issuers struct {
	st     *state
	raw    []byte
	active *issuer
	all    []*issuer // active first
	roots  []*x509.Certificate
}

func (s *issuers) byID(id string) *issuer {
	for _, iss := range s.all {
		if iss.id == id {
			return iss
		}
	}
	return nil
}

// issuerOf finds the intermediate that signed cert, checking the signature.
func (s *issuers) issuerOf(cert *x509.Certificate) *issuer {
	for _, iss := range s.all {
		if bytes.Equal(cert.RawIssuer, iss.cert.RawSubject) && cert.CheckSignatureFrom(iss.cert) == nil {
			return iss
		}
	}
	return nil
}

func intID(n int) string      { return "int-" + strconv.Itoa(n) }
func intKeyName(n int) string { return intKeyNamePrefix + strconv.Itoa(n) }

// issuerKeyType checks an issuer key type. Ed25519 is not offered: OCSP
// responses cannot be signed with it by x/crypto/ocsp, and few relying
// parties accept it in a chain.
func issuerKeyType(s string) (kms.KeyType, error) {
	switch t := kms.KeyType(s); t {
	case kms.TypeECDSAP256, kms.TypeECDSAP384, kms.TypeRSA2048, kms.TypeRSA3072, kms.TypeRSA4096:
		return t, nil
	}
	return "", fmt.Errorf("%w: issuer key type %q: want ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072 or rsa-4096", ErrInvalid, s)
}

// loadState reads the state; st is nil before the first change.
func (c *CA) loadState(ctx context.Context) (st *state, raw []byte, err error) {
	raw, found, err := c.get(ctx, tableState, recState)
	if err != nil || !found {
		return nil, nil, err
	}
	st = new(state)
	if err := json.Unmarshal(raw, st); err != nil {
		return nil, nil, fmt.Errorf("ca: stored state: %w", err)
	}
	return st, raw, nil
}

// issuers returns the parsed state, read again once it is older than
// CacheTTL. It fails with ErrNotInitialized before Init.
func (c *CA) issuers(ctx context.Context) (*issuers, error) {
	c.mu.Lock()
	set, at := c.cached, c.cachedAt
	c.mu.Unlock()
	if set != nil && time.Since(at) < c.cfg.CacheTTL {
		return set, nil
	}
	st, raw, err := c.loadState(ctx)
	if err != nil {
		return nil, err
	}
	if st == nil || st.Active == "" {
		return nil, ErrNotInitialized
	}
	set, err = parseState(st, raw)
	if err != nil {
		return nil, err
	}
	c.setCache(set)
	return set, nil
}

func (c *CA) setCache(set *issuers) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if set == nil || set.st.Active == "" {
		c.cached = nil
		return
	}
	c.cached, c.cachedAt = set, time.Now()
}

func parseState(st *state, raw []byte) (*issuers, error) {
	set := &issuers{st: st, raw: raw}
	for _, rec := range st.Issuers {
		iss := &issuer{id: rec.ID, key: rec.Key, keyVersion: rec.KeyVersion, retired: !rec.Retired.IsZero()}
		for _, der := range rec.Chain {
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("ca: stored chain of %s: %w", rec.ID, err)
			}
			iss.chain = append(iss.chain, cert)
		}
		if len(iss.chain) < 2 {
			return nil, fmt.Errorf("ca: stored chain of %s is too short", rec.ID)
		}
		iss.cert = iss.chain[0]
		if rec.ID == st.Active {
			set.active = iss
			set.all = append([]*issuer{iss}, set.all...)
		} else {
			set.all = append(set.all, iss)
		}
	}
	if st.Active != "" && set.active == nil {
		return nil, fmt.Errorf("ca: stored state names an unknown active issuer %s", st.Active)
	}
	for _, iss := range set.all {
		root := iss.chain[len(iss.chain)-1]
		if !slices.ContainsFunc(set.roots, root.Equal) {
			set.roots = append(set.roots, root)
		}
	}
	return set, nil
}

// errNoChange tells updateState that there is nothing to write.
var errNoChange = errors.New("no change")

// updateState applies fn to the stored state (a new one before the first
// change) and writes it back by compare-and-swap, retrying when another
// writer got there first. fn must be safe to run more than once.
func (c *CA) updateState(ctx context.Context, fn func(st *state) error) (*issuers, error) {
	for range 8 {
		st, raw, err := c.loadState(ctx)
		if err != nil {
			return nil, err
		}
		if st == nil {
			st = &state{CommonName: c.cfg.CommonName, KeyType: kms.KeyType(c.cfg.KeyType), IntermediateTTL: c.cfg.IntermediateTTL, Next: 1}
		}
		if err := fn(st); errors.Is(err, errNoChange) {
			return parseState(st, raw)
		} else if err != nil {
			return nil, err
		}
		newRaw, err := json.Marshal(st)
		if err != nil {
			return nil, err
		}
		set, err := parseState(st, newRaw)
		if err != nil {
			return nil, err
		}
		ok, _, err := c.store.CompareAndSwap(ctx, tableState, recState, raw, newRaw)
		if err != nil {
			return nil, err
		}
		if ok {
			c.setCache(set)
			return set, nil
		}
	}
	return nil, fmt.Errorf("%w: the issuers kept changing", ErrConflict)
}

// ensureKey creates a non-exportable sign key, or takes the one a failed
// earlier attempt left, and returns its signer and version.
func (c *CA) ensureKey(ctx context.Context, name string, t kms.KeyType) (crypto.Signer, int, error) {
	_, err := c.kms.CreateKey(ctx, name, kms.KeyOptions{Type: t})
	if err != nil && !errors.Is(err, kms.ErrKeyExists) {
		return nil, 0, fmt.Errorf("ca: create key %s: %w", name, err)
	}
	info, err := c.kms.Key(ctx, name)
	if err != nil {
		return nil, 0, err
	}
	if info.Type != t || info.Exportable {
		return nil, 0, fmt.Errorf("ca: key %s exists with type %s (exportable %t), want a non-exportable %s", name, info.Type, info.Exportable, t)
	}
	s, err := c.kms.Signer(ctx, name, info.Latest)
	if err != nil {
		return nil, 0, err
	}
	return s, info.Latest, nil
}

// InitOptions are the settings of Init; zero fields take the Config's.
type InitOptions struct {
	CommonName               string
	KeyType                  string
	RootTTL, IntermediateTTL time.Duration
}

// Init creates the root and the first intermediate, with keys in the KMS,
// and returns the chain [intermediate, root]. Both certificates are linted
// (after signing: one that fails is never installed). It fails with
// ErrAlreadyInitialized once the CA has an active intermediate. A failed
// Init can be run again: it takes the keys the failed one made.
func (c *CA) Init(ctx context.Context, o InitOptions) ([]*x509.Certificate, error) {
	if o.CommonName == "" {
		o.CommonName = c.cfg.CommonName
	}
	if o.KeyType == "" {
		o.KeyType = c.cfg.KeyType
	}
	if o.RootTTL == 0 {
		o.RootTTL = c.cfg.RootTTL
	}
	if o.IntermediateTTL == 0 {
		o.IntermediateTTL = c.cfg.IntermediateTTL
	}
	t, err := issuerKeyType(o.KeyType)
	switch {
	case err != nil:
		return nil, err
	case len(o.CommonName) > 56:
		return nil, fmt.Errorf("%w: common name is over 56 characters", ErrInvalid)
	case o.IntermediateTTL <= c.cfg.MaxTTL || o.RootTTL < o.IntermediateTTL:
		return nil, fmt.Errorf("%w: need MaxTTL (%v) < intermediate TTL <= root TTL", ErrInvalid, c.cfg.MaxTTL)
	}
	if st, _, err := c.loadState(ctx); err != nil {
		return nil, err
	} else if st != nil && st.Active != "" {
		return nil, ErrAlreadyInitialized
	}
	rootSigner, _, err := c.ensureKey(ctx, rootKeyName, t)
	if err != nil {
		return nil, err
	}
	now := c.now()
	tmpl, err := caTemplate(o.CommonName+" Root", now.Add(-c.cfg.Backdate), now.Add(o.RootTTL), -1)
	if err != nil {
		return nil, err
	}
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	root, err := createCert(tmpl, tmpl, rootSigner.Public(), rootSigner)
	if err == nil {
		err = c.Lint(root)
	}
	if err != nil {
		return nil, fmt.Errorf("ca: root: %w", err)
	}
	set, err := c.updateState(ctx, func(st *state) error {
		if st.Active != "" {
			return ErrAlreadyInitialized
		}
		rec, err := c.newIntermediate(ctx, st.Next, o.CommonName, t, root, rootSigner, o.IntermediateTTL)
		if err != nil {
			return err
		}
		st.CommonName, st.KeyType, st.IntermediateTTL, st.RootKey = o.CommonName, t, o.IntermediateTTL, rootKeyName
		st.Issuers, st.Active, st.Next = []issuerRecord{rec}, rec.ID, st.Next+1
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.firstCRL(ctx, set.active.id)
	return slices.Clone(set.active.chain), nil
}

// firstCRL makes a new intermediate's first CRL on the leader, so that
// followers have one to serve; if it fails, Maintain makes it.
func (c *CA) firstCRL(ctx context.Context, issuerID string) {
	if !c.cfg.IsLeader() {
		return
	}
	if _, err := c.refreshCRL(ctx, issuerID); err != nil {
		c.log.Warn("ca: first CRL not made; Maintain will retry", "issuer", issuerID, "error", err)
	}
}

// newIntermediate makes key number n and its certificate, signed by root.
func (c *CA) newIntermediate(ctx context.Context, n int, cn string, t kms.KeyType, root *x509.Certificate, rootSigner crypto.Signer, ttl time.Duration) (issuerRecord, error) {
	signer, version, err := c.ensureKey(ctx, intKeyName(n), t)
	if err != nil {
		return issuerRecord{}, err
	}
	now := c.now()
	tmpl, err := caTemplate(fmt.Sprintf("%s Intermediate %d", cn, n), now.Add(-c.cfg.Backdate), minTime(now.Add(ttl), root.NotAfter), 0)
	if err != nil {
		return issuerRecord{}, err
	}
	cert, err := createCert(tmpl, root, signer.Public(), rootSigner)
	if err == nil {
		err = c.Lint(cert)
	}
	if err != nil {
		return issuerRecord{}, fmt.Errorf("ca: intermediate: %w", err)
	}
	return issuerRecord{ID: intID(n), Key: intKeyName(n), KeyVersion: version, Chain: [][]byte{cert.Raw, root.Raw}}, nil
}

// caTemplate is the template of an issuer certificate. maxPathLen -1
// leaves the path length unconstrained.
func caTemplate(cn string, notBefore, notAfter time.Time, maxPathLen int) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: maxPathLen, MaxPathLenZero: maxPathLen == 0,
	}, nil
}

// createCert signs tmpl and parses the result. crypto/x509 checks that the
// signer's public key is parent's and verifies the signature with it before
// it returns (signTBS), so a certificate that comes back carries a good
// signature from its issuer; checking again would only cost a verification.
func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// newSerial returns the serial of a certificate this CA signs: 16 bytes
// (see NewSerial).
func newSerial() (*big.Int, error) { return NewSerial(16) }

// NewSerial returns a serial of size bytes, 14 to 20: the time in
// milliseconds (6 bytes, big-endian), then random bits, 64 or more as the
// CA/Browser Forum asks. Serials grow with time, so the tables keyed by
// serial (the inventory, its indexes, ACME's certificate records) are
// written at their ends, with full pages (see OrderedTables); the random
// bits keep them unpredictable. The clock gives only an order here, not a
// validity. The serial is positive and of the full size: the time's top
// byte is 0x01 now, and its top bit is clear until the year 6429.
func NewSerial(size int) (*big.Int, error) {
	if size < 14 || size > 20 {
		return nil, fmt.Errorf("ca: a serial of %d bytes", size)
	}
	b := make([]byte, size)
	ms := uint64(time.Now().UnixMilli())
	for i := 5; i >= 0; i-- {
		b[i], ms = byte(ms), ms>>8
	}
	if _, err := rand.Read(b[6:]); err != nil {
		return nil, err
	}
	return new(big.Int).SetBytes(b), nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Issuer returns a signer for the active intermediate, whose key stays in
// the KMS, and its chain [intermediate, root].
func (c *CA) Issuer(ctx context.Context) (crypto.Signer, []*x509.Certificate, error) {
	set, err := c.issuers(ctx)
	if err != nil {
		return nil, nil, err
	}
	s, err := c.kms.Signer(ctx, set.active.key, set.active.keyVersion)
	if err != nil {
		return nil, nil, err
	}
	return s, slices.Clone(set.active.chain), nil
}

// Roots returns the roots that the active and the retired intermediates
// chain to, the active one's first.
func (c *CA) Roots(ctx context.Context) ([]*x509.Certificate, error) {
	set, err := c.issuers(ctx)
	if err != nil {
		return nil, err
	}
	return slices.Clone(set.roots), nil
}

// IssuerInfo describes one intermediate.
type IssuerInfo struct {
	ID          string
	Active      bool
	Certificate *x509.Certificate
	Chain       []*x509.Certificate
}

// Issuers lists the active and the retired intermediates, the active first.
func (c *CA) Issuers(ctx context.Context) ([]IssuerInfo, error) {
	set, err := c.issuers(ctx)
	if err != nil {
		return nil, err
	}
	var out []IssuerInfo
	for _, iss := range set.all {
		out = append(out, IssuerInfo{ID: iss.id, Active: iss == set.active, Certificate: iss.cert, Chain: slices.Clone(iss.chain)})
	}
	return out, nil
}

// validIssuerID reports whether id has the form of an intermediate's ID.
func validIssuerID(id string) bool {
	n, err := strconv.Atoi(strings.TrimPrefix(id, "int-"))
	return strings.HasPrefix(id, "int-") && err == nil && n > 0 && intID(n) == id
}
