package ca

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/custos-pki/custos/raftstore"
)

// Role is what REST issuance may put in a certificate.
//
// Names: an AllowedDomains entry without '*' allows that exact name; with
// AllowSubdomains it allows every name below it at any depth, and then the
// entry itself only with AllowBareDomains. In an entry with '*' each '*'
// matches within one label ("*.example.com" allows a.example.com, not
// a.b.example.com nor example.com), and AllowSubdomains allows names below a
// match. A wildcard name in the certificate ("*.example.com") needs
// AllowWildcardCertificates and an entry whose label is '*' at its place, or
// AllowSubdomains. Names are letters, digits and hyphens (A-labels for IDNs),
// compared in lower case.
//
// URI SANs: an AllowedURISANs entry has a scheme, a host and a path; '*'
// matches within one path segment, so "spiffe://example.org/ns/*/sa/*"
// allows spiffe://example.org/ns/prod/sa/web. Without '*' the URI must be
// equal.
type Role struct {
	Name                      string   `json:"name"`
	AllowedDomains            []string `json:"allowed_domains,omitempty"`
	AllowSubdomains           bool     `json:"allow_subdomains,omitempty"`
	AllowBareDomains          bool     `json:"allow_bare_domains,omitempty"`
	AllowWildcardCertificates bool     `json:"allow_wildcard_certificates,omitempty"`
	// AllowedIPRanges are CIDRs (a bare address is a /32 or /128).
	AllowedIPRanges []string `json:"allowed_ip_ranges,omitempty"`
	AllowedURISANs  []string `json:"allowed_uri_sans,omitempty"`
	// AllowedKeyTypes are among ecdsa-p256, ecdsa-p384, ecdsa-p521, ed25519
	// and rsa; empty means all but ecdsa-p521. RSA keys must have at least
	// MinRSABits (2048 at least, the default) and at most 8192 bits.
	AllowedKeyTypes []string `json:"allowed_key_types,omitempty"`
	MinRSABits      int      `json:"min_rsa_bits,omitempty"`
	// TTL is the lifetime of a certificate requested without one; MaxTTL is
	// the longest a request may ask for. Zero takes the CA's defaults.
	TTL    time.Duration `json:"ttl,omitempty"`
	MaxTTL time.Duration `json:"max_ttl,omitempty"`
	// KeyUsage names: digital_signature, content_commitment,
	// key_encipherment, data_encipherment, key_agreement; empty means
	// digital_signature and key_encipherment. key_encipherment and
	// data_encipherment are dropped for keys other than RSA.
	KeyUsage []string `json:"key_usage,omitempty"`
	// ExtKeyUsage names: server_auth, client_auth, code_signing,
	// email_protection, time_stamping; ServerFlag and ClientFlag add the
	// first two.
	ExtKeyUsage []string `json:"ext_key_usage,omitempty"`
	ServerFlag  bool     `json:"server_flag,omitempty"`
	ClientFlag  bool     `json:"client_flag,omitempty"`
	// RequireCommonName refuses requests without a common name. A common
	// name, when given, must be an allowed DNS name or one of the request's
	// SANs.
	RequireCommonName bool `json:"require_common_name,omitempty"`
}

// Key type names of roles.
var roleKeyTypes = []string{"ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519", "rsa"}

var defaultKeyTypes = []string{"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa"}

// checkName accepts 1 to 128 of [a-z0-9_.-], not starting with '.' or '-'.
func checkName(kind, name string) error {
	ok := len(name) >= 1 && len(name) <= 128 && name[0] != '.' && name[0] != '-'
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w: %s name must be 1 to 128 of [a-z0-9_.-]", ErrInvalid, kind)
	}
	return nil
}

// normalize checks r and fills in its defaults.
func (r *Role) normalize(defaultTTL, maxTTL time.Duration) error {
	if err := checkName("role", r.Name); err != nil {
		return err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: role %q: %s", ErrInvalid, r.Name, fmt.Sprintf(format, args...))
	}
	for i, d := range r.AllowedDomains {
		d = strings.ToLower(d)
		if err := checkDNSPattern(d); err != nil {
			return bad("allowed domain %q: %v", d, err)
		}
		r.AllowedDomains[i] = d
	}
	for i, s := range r.AllowedIPRanges {
		p, err := parsePrefix(s)
		if err != nil {
			return bad("allowed IP range %q: %v", s, err)
		}
		r.AllowedIPRanges[i] = p.String()
	}
	for _, s := range r.AllowedURISANs {
		if _, err := parseURIPattern(s); err != nil {
			return bad("allowed URI SAN %q: %v", s, err)
		}
	}
	if len(r.AllowedKeyTypes) == 0 {
		r.AllowedKeyTypes = slices.Clone(defaultKeyTypes)
	}
	for _, t := range r.AllowedKeyTypes {
		if !slices.Contains(roleKeyTypes, t) {
			return bad("key type %q: want one of %s", t, strings.Join(roleKeyTypes, ", "))
		}
	}
	switch {
	case r.MinRSABits == 0:
		r.MinRSABits = 2048
	case r.MinRSABits < 2048 || r.MinRSABits > 8192:
		return bad("min_rsa_bits must be 2048 to 8192")
	}
	if r.MaxTTL == 0 {
		r.MaxTTL = maxTTL
	}
	if r.TTL == 0 {
		r.TTL = min(defaultTTL, r.MaxTTL)
	}
	switch {
	case r.TTL < 0 || r.MaxTTL < 0:
		return bad("ttl and max_ttl must not be negative")
	case r.MaxTTL > maxTTL:
		return bad("max_ttl %v is over the CA's maximum %v", r.MaxTTL, maxTTL)
	case r.TTL > r.MaxTTL:
		return bad("ttl %v is over max_ttl %v", r.TTL, r.MaxTTL)
	}
	if len(r.KeyUsage) == 0 {
		r.KeyUsage = []string{"digital_signature", "key_encipherment"}
	}
	for _, u := range r.KeyUsage {
		if _, ok := keyUsages[u]; !ok {
			return bad("key usage %q is unknown", u)
		}
	}
	for _, u := range r.ExtKeyUsage {
		if _, ok := extKeyUsages[u]; !ok {
			return bad("extended key usage %q is unknown", u)
		}
	}
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked(), nil
}

// WriteRole creates or replaces a role, after checking it and filling in
// its defaults. It returns the role as stored.
func (c *CA) WriteRole(ctx context.Context, r Role) (Role, error) {
	r = r.clone()
	if err := r.normalize(c.cfg.DefaultTTL, c.cfg.MaxTTL); err != nil {
		return Role{}, err
	}
	raw, err := json.Marshal(r)
	if err != nil {
		return Role{}, err
	}
	if err := c.store.Put(ctx, tableRoles, []byte(r.Name), raw); err != nil {
		return Role{}, fmt.Errorf("write role: %w", err)
	}
	return r, nil
}

// ReadRole returns a role, or an error matching ErrNotFound.
func (c *CA) ReadRole(ctx context.Context, name string) (Role, error) {
	if err := checkName("role", name); err != nil {
		return Role{}, err
	}
	raw, found, err := c.get(ctx, tableRoles, []byte(name))
	if err != nil {
		return Role{}, err
	}
	if !found {
		return Role{}, fmt.Errorf("%w: role %q", ErrNotFound, name)
	}
	var r Role
	if err := json.Unmarshal(raw, &r); err != nil {
		return Role{}, fmt.Errorf("ca: stored role %q: %w", name, err)
	}
	return r, nil
}

// ListRoles returns the names of all roles, in order.
func (c *CA) ListRoles(ctx context.Context) ([]string, error) {
	names := []string{}
	err := c.listAll(ctx, tableRoles, nil, nil, true, func(kv raftstore.KV) (bool, error) {
		names = append(names, string(kv.Key))
		return true, nil
	})
	return names, err
}

// DeleteRole deletes a role; certificates issued under it are kept.
func (c *CA) DeleteRole(ctx context.Context, name string) error {
	if err := checkName("role", name); err != nil {
		return err
	}
	res, err := c.store.Txn(ctx, []raftstore.Op{
		{Kind: raftstore.OpGet, Table: tableRoles, Key: []byte(name)},
		{Kind: raftstore.OpDelete, Table: tableRoles, Key: []byte(name)},
	})
	if err != nil {
		return fmt.Errorf("delete role: %w", err)
	}
	if !res.Succeeded {
		return fmt.Errorf("%w: role %q", ErrNotFound, name)
	}
	return nil
}

func (r Role) clone() Role {
	r.AllowedDomains = slices.Clone(r.AllowedDomains)
	r.AllowedIPRanges = slices.Clone(r.AllowedIPRanges)
	r.AllowedURISANs = slices.Clone(r.AllowedURISANs)
	r.AllowedKeyTypes = slices.Clone(r.AllowedKeyTypes)
	r.KeyUsage = slices.Clone(r.KeyUsage)
	r.ExtKeyUsage = slices.Clone(r.ExtKeyUsage)
	return r
}

// uriPattern is a parsed AllowedURISANs entry.
type uriPattern struct {
	scheme, host string
	segments     []string // path segments after the leading '/'
}

func parseURIPattern(s string) (uriPattern, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return uriPattern{}, err
	case u.Scheme == "" || u.Host == "" || u.Opaque != "":
		return uriPattern{}, fmt.Errorf("needs a scheme and a host")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return uriPattern{}, fmt.Errorf("must not have user info, a query or a fragment")
	case strings.ContainsAny(s, `?[]\`):
		return uriPattern{}, fmt.Errorf("only '*' is special")
	case strings.Contains(u.Host, "*"):
		return uriPattern{}, fmt.Errorf("'*' is allowed in the path only")
	}
	p := uriPattern{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Host)}
	if u.Path != "" {
		p.segments = strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	}
	return p, nil
}
