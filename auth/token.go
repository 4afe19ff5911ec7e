package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/custos-pki/custos/raftstore"
)

// TokenPrefix starts every token, so that a leaked one is recognisable
// (and findable by secret scanners).
const TokenPrefix = "cst_"

const (
	tokenBytes     = 32
	tokenLen       = len(TokenPrefix) + 43 // base64url of 32 bytes, unpadded
	accessorBytes  = 16
	maxPolicies    = 64
	maxDisplayName = 128
	maxMeta        = 32
	maxMetaKey     = 128
	maxMetaValue   = 512
	maxCASRetries  = 8
)

// Token describes a token; it holds nothing secret.
type Token struct {
	// Accessor names the token without granting anything: it can be shown,
	// logged, and used by an operator to look the token up or revoke it.
	Accessor string `json:"accessor"`
	// Policies, sorted.
	Policies    []string          `json:"policies"`
	DisplayName string            `json:"display_name,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	// Parent is the parent's accessor; empty for root and login tokens.
	Parent    string    `json:"parent,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is zero for a token that never expires (root tokens).
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// MaxExpiresAt is the latest a renewal can take ExpiresAt.
	MaxExpiresAt time.Time `json:"max_expires_at,omitzero"`
	// TTL is the renewal increment used when none is asked for.
	TTL       time.Duration `json:"ttl,omitempty"`
	Renewable bool          `json:"renewable,omitempty"`
	// NumUses is how many uses remain; 0 means unlimited.
	NumUses int `json:"num_uses,omitempty"`
}

// IsRoot reports whether the token holds the root policy.
func (t *Token) IsRoot() bool { return slices.Contains(t.Policies, PolicyRoot) }

// expired reports whether the token's lifetime is over at now.
func (t *Token) expired(now time.Time) bool {
	return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}

// record is a token as stored.
type record struct {
	Token
	// Revoking is set when revocation starts: the token is refused and can
	// gain no children from then on.
	Revoking bool `json:"revoking,omitempty"`
	// Cert is the ID of the certificate a login token came from, the key
	// prefix of its entry in tableCertToks.
	Cert string `json:"cert,omitempty"`
}

// TokenRequest asks for a child token.
type TokenRequest struct {
	// Policies for the token; "default" is added. Without "root" on the
	// parent, each must be one of the parent's.
	Policies []string
	// TTL is the lifetime; 0 means Config.DefaultTTL. It is cut short to
	// the parent's expiry.
	TTL time.Duration
	// MaxTTL caps renewals; 0 means Config.MaxTTL.
	MaxTTL      time.Duration
	Renewable   bool
	DisplayName string
	Meta        map[string]string
	// NumUses limits how many requests Authenticate lets the token make; 0
	// means unlimited. A limited token cannot create children.
	NumUses int
}

// newToken returns a fresh token and the hash it is stored under.
func newToken() (string, []byte) {
	var b [tokenBytes]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	tok := TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	h := sha256.Sum256([]byte(tok))
	return tok, h[:]
}

func newAccessor() string {
	var b [accessorBytes]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// tokenHash returns the storage key of a well-formed token.
func tokenHash(tok string) ([]byte, error) {
	if len(tok) != tokenLen || !strings.HasPrefix(tok, TokenPrefix) {
		return nil, fmt.Errorf("%w: malformed token", ErrPermissionDenied)
	}
	var b [tokenBytes]byte // tokenLen holds exactly tokenBytes
	if n, err := base64.RawURLEncoding.Decode(b[:], []byte(tok[len(TokenPrefix):])); err != nil || n != tokenBytes {
		return nil, fmt.Errorf("%w: malformed token", ErrPermissionDenied)
	}
	var t [tokenLen]byte // []byte(tok) would be allocated: over 32 bytes
	copy(t[:], tok)
	h := sha256.Sum256(t[:])
	return h[:], nil
}

func validAccessor(a string) error {
	if len(a) != 2*accessorBytes {
		return fmt.Errorf("%w: malformed accessor", ErrInvalid)
	}
	if _, err := hex.DecodeString(a); err != nil || strings.ToLower(a) != a {
		return fmt.Errorf("%w: malformed accessor", ErrInvalid)
	}
	return nil
}

// CreateRootToken makes a token with the root policy that never expires,
// for init and generate-root. Only the node itself calls it.
func (s *Service) CreateRootToken(ctx context.Context, displayName string) (string, *Token, error) {
	if err := checkText("display name", displayName, maxDisplayName); err != nil {
		return "", nil, err
	}
	t := &Token{Policies: []string{PolicyRoot}, DisplayName: displayName, CreatedAt: s.now()}
	return s.insert(ctx, t, nil)
}

// CreateToken makes a child of the token parent, which must be valid and
// have unlimited uses. The child's policies must be the parent's unless the
// parent holds "root", and it expires no later than the parent.
func (s *Service) CreateToken(ctx context.Context, parent string, req TokenRequest) (string, *Token, error) {
	_, _, p, err := s.lookup(ctx, parent)
	if err != nil {
		return "", nil, err
	}
	if p.NumUses > 0 {
		return "", nil, fmt.Errorf("%w: a limited-use token cannot create tokens", ErrPermissionDenied)
	}
	t, err := s.newChild(&p.Token, req)
	if err != nil {
		return "", nil, err
	}
	return s.insert(ctx, t, &p.Token)
}

// newChild builds a child token of parent (nil for a login token) from req.
func (s *Service) newChild(parent *Token, req TokenRequest) (*Token, error) {
	policies, err := normalizePolicies(req.Policies)
	if err != nil {
		return nil, err
	}
	if parent != nil && !parent.IsRoot() {
		for _, p := range policies {
			if p != PolicyDefault && !slices.Contains(parent.Policies, p) {
				return nil, fmt.Errorf("%w: policy %q is not held by the parent token", ErrPermissionDenied, p)
			}
		}
	}
	ttl, maxTTL, err := s.ttls(req.TTL, req.MaxTTL)
	if err != nil {
		return nil, err
	}
	if err := checkText("display name", req.DisplayName, maxDisplayName); err != nil {
		return nil, err
	}
	if err := checkMeta(req.Meta); err != nil {
		return nil, err
	}
	if req.NumUses < 0 {
		return nil, fmt.Errorf("%w: num_uses must not be negative", ErrInvalid)
	}
	now := s.now()
	t := &Token{
		Policies: policies, DisplayName: req.DisplayName, Meta: maps.Clone(req.Meta),
		CreatedAt: now, ExpiresAt: now.Add(ttl), MaxExpiresAt: now.Add(maxTTL),
		TTL: ttl, Renewable: req.Renewable, NumUses: req.NumUses,
	}
	if parent != nil {
		t.Parent = parent.Accessor
		t.ExpiresAt = earliest(t.ExpiresAt, parent.ExpiresAt)
		t.MaxExpiresAt = earliest(t.MaxExpiresAt, parent.MaxExpiresAt)
	}
	return t, nil
}

// ttls applies the defaults and limits to a requested TTL and max TTL.
func (s *Service) ttls(ttl, maxTTL time.Duration) (time.Duration, time.Duration, error) {
	if ttl < 0 || maxTTL < 0 {
		return 0, 0, fmt.Errorf("%w: ttl and max_ttl must not be negative", ErrInvalid)
	}
	if maxTTL == 0 {
		maxTTL = s.cfg.MaxTTL
	}
	if ttl == 0 {
		ttl = min(s.cfg.DefaultTTL, maxTTL)
	}
	switch {
	case maxTTL > s.cfg.MaxTTL:
		return 0, 0, fmt.Errorf("%w: max_ttl %v is over the limit of %v", ErrInvalid, maxTTL, s.cfg.MaxTTL)
	case ttl > maxTTL:
		return 0, 0, fmt.Errorf("%w: ttl %v is over max_ttl %v", ErrInvalid, ttl, maxTTL)
	}
	return ttl, maxTTL, nil
}

// insert stores a new token in one transaction, which aborts if the parent
// is being revoked (its accessor entry is gone).
func (s *Service) insert(ctx context.Context, t *Token, parent *Token) (string, *Token, error) {
	return s.insertFor(ctx, t, parent, "")
}

// insertFor is insert for a token from a login with the certificate whose
// ID is cert, if not "": the token is indexed under it.
func (s *Service) insertFor(ctx context.Context, t *Token, parent *Token, cert string) (string, *Token, error) {
	tok, hash := newToken()
	t.Accessor = newAccessor()
	raw, err := json.Marshal(record{Token: *t, Cert: cert})
	if err != nil {
		return "", nil, fmt.Errorf("auth: encode token: %w", err)
	}
	var ops []raftstore.Op
	if parent != nil {
		ops = append(ops,
			raftstore.Op{Kind: raftstore.OpGet, Table: tableAccessors, Key: []byte(parent.Accessor)},
			raftstore.Op{Kind: raftstore.OpPut, Table: tableChildren, Key: childKey(parent.Accessor, t.Accessor), Value: hash})
	}
	ops = append(ops,
		raftstore.Op{Kind: raftstore.OpCAS, Table: tableTokens, Key: hash, Value: raw},
		raftstore.Op{Kind: raftstore.OpCAS, Table: tableAccessors, Key: []byte(t.Accessor), Value: hash})
	if cert != "" {
		ops = append(ops, raftstore.Op{Kind: raftstore.OpPut, Table: tableCertToks, Key: certTokenKey(cert, t.Accessor), Value: hash})
	}
	res, err := s.store.Txn(ctx, ops)
	if err != nil {
		return "", nil, fmt.Errorf("auth: store token: %w", err)
	}
	if !res.Succeeded {
		if parent != nil && res.FailedOp == 0 {
			return "", nil, fmt.Errorf("%w: the parent token is revoked", ErrPermissionDenied)
		}
		return "", nil, fmt.Errorf("auth: store token: random identifier collision")
	}
	return tok, t, nil
}

func childKey(parent, child string) []byte { return []byte(parent + "/" + child) }

// Lookup returns the token's description. An unknown, malformed or revoked
// token is ErrPermissionDenied; an expired one ErrExpired. It does not use
// up a limited-use token: see Authenticate.
func (s *Service) Lookup(ctx context.Context, token string) (*Token, error) {
	_, _, r, err := s.lookup(ctx, token)
	if err != nil {
		return nil, err
	}
	return &r.Token, nil
}

// lookup reads a valid token's record (a linearizable read, so a token
// revoked through any node is refused at once).
func (s *Service) lookup(ctx context.Context, token string) (hash, raw []byte, r *record, err error) {
	if hash, err = tokenHash(token); err != nil {
		return nil, nil, nil, err
	}
	raw, r, err = s.load(ctx, hash)
	return hash, raw, r, err
}

// load reads and checks the record under hash.
func (s *Service) load(ctx context.Context, hash []byte) ([]byte, *record, error) {
	raw, r, err := s.read(ctx, hash)
	if err != nil {
		return nil, nil, err
	}
	if r == nil || r.Revoking {
		return nil, nil, fmt.Errorf("%w: invalid token", ErrPermissionDenied)
	}
	if r.expired(s.now()) {
		return nil, nil, fmt.Errorf("%w: token expired at %s", ErrExpired, r.ExpiresAt.Format(time.RFC3339))
	}
	return raw, r, nil
}

// read returns the raw and decoded record under hash, or nils if absent.
func (s *Service) read(ctx context.Context, hash []byte) ([]byte, *record, error) {
	raw, found, err := s.get(ctx, tableTokens, hash)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: read token: %w", err)
	}
	if !found {
		return nil, nil, nil
	}
	r, err := s.decoded.decode(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: read token: %w", err)
	}
	return raw, r, nil
}

// LookupAccessor returns the description of the token with this accessor.
func (s *Service) LookupAccessor(ctx context.Context, accessor string) (*Token, error) {
	hash, err := s.accessorHash(ctx, accessor)
	if err != nil {
		return nil, err
	}
	_, r, err := s.load(ctx, hash)
	if err != nil {
		return nil, err
	}
	return &r.Token, nil
}

func (s *Service) accessorHash(ctx context.Context, accessor string) ([]byte, error) {
	if err := validAccessor(accessor); err != nil {
		return nil, err
	}
	hash, found, err := s.get(ctx, tableAccessors, []byte(accessor))
	if err != nil {
		return nil, fmt.Errorf("auth: read accessor: %w", err)
	}
	if !found {
		return nil, fmt.Errorf("%w: accessor %s", ErrNotFound, accessor)
	}
	return hash, nil
}

// Authenticate is Lookup for a request made with the token: it also uses
// up one use of a limited-use token, deleting it with its last use. It
// reads the token with a linearizable read (callers rely on it: once it
// returns, this node's state holds every write acknowledged before the
// call began).
func (s *Service) Authenticate(ctx context.Context, token string) (*Token, error) {
	for range maxCASRetries {
		hash, raw, r, err := s.lookup(ctx, token)
		if err != nil {
			return nil, err
		}
		if r.NumUses == 0 {
			return &r.Token, nil
		}
		ops := []raftstore.Op{{Kind: raftstore.OpCAS, Table: tableTokens, Key: hash, Old: raw}}
		if r.NumUses == 1 {
			ops[0].Delete = true
			ops = append(ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableAccessors, Key: []byte(r.Accessor)})
			if r.Parent != "" {
				ops = append(ops, raftstore.Op{Kind: raftstore.OpDelete, Table: tableChildren, Key: childKey(r.Parent, r.Accessor)})
			}
		} else {
			next := *r
			next.NumUses--
			if ops[0].Value, err = json.Marshal(next); err != nil {
				return nil, fmt.Errorf("auth: encode token: %w", err)
			}
		}
		res, err := s.store.Txn(ctx, ops)
		if err != nil {
			return nil, fmt.Errorf("auth: use token: %w", err)
		}
		if res.Succeeded {
			r.NumUses--
			return &r.Token, nil
		}
	}
	return nil, errContention
}

// normalizePolicies validates, sorts and de-duplicates policy names and
// adds "default" unless "root" is among them.
func normalizePolicies(in []string) ([]string, error) {
	if len(in) > maxPolicies {
		return nil, fmt.Errorf("%w: more than %d policies", ErrInvalid, maxPolicies)
	}
	out := make([]string, 0, len(in)+1)
	for _, p := range in {
		if err := validName("policy", p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if !slices.Contains(out, PolicyRoot) {
		out = append(out, PolicyDefault)
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

// checkText accepts printable UTF-8 of at most n bytes.
func checkText(what, v string, n int) error {
	if len(v) > n || !utf8.ValidString(v) || strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("%w: %s: want at most %d bytes of printable UTF-8", ErrInvalid, what, n)
	}
	return nil
}

func checkMeta(m map[string]string) error {
	if len(m) > maxMeta {
		return fmt.Errorf("%w: more than %d metadata entries", ErrInvalid, maxMeta)
	}
	for k, v := range m {
		if k == "" {
			return fmt.Errorf("%w: empty metadata key", ErrInvalid)
		}
		if err := checkText("metadata key", k, maxMetaKey); err != nil {
			return err
		}
		if err := checkText("metadata value", v, maxMetaValue); err != nil {
			return err
		}
	}
	return nil
}

// earliest returns the earlier of two times, where zero means "never".
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
