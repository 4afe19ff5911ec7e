package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
)

var keyUsages = map[string]x509.KeyUsage{
	"digital_signature":  x509.KeyUsageDigitalSignature,
	"content_commitment": x509.KeyUsageContentCommitment,
	"key_encipherment":   x509.KeyUsageKeyEncipherment,
	"data_encipherment":  x509.KeyUsageDataEncipherment,
	"key_agreement":      x509.KeyUsageKeyAgreement,
}

var extKeyUsages = map[string]x509.ExtKeyUsage{
	"server_auth":      x509.ExtKeyUsageServerAuth,
	"client_auth":      x509.ExtKeyUsageClientAuth,
	"code_signing":     x509.ExtKeyUsageCodeSigning,
	"email_protection": x509.ExtKeyUsageEmailProtection,
	"time_stamping":    x509.ExtKeyUsageTimeStamping,
}

// checkLabels checks a dot-separated name: 1 to 253 characters, labels of
// 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen.
// star allows '*' in labels (a pattern); a name may only start with "*.".
func checkLabels(name string, star bool) error {
	if len(name) == 0 || len(name) > 253 {
		return errors.New("must be 1 to 253 characters")
	}
	for i, l := range strings.Split(name, ".") {
		if len(l) == 0 || len(l) > 63 {
			return errors.New("labels must be 1 to 63 characters")
		}
		if l == "*" && i == 0 {
			continue
		}
		for j := 0; j < len(l); j++ {
			c := l[j]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || star && c == '*') {
				return fmt.Errorf("label %q: only letters, digits and hyphens are allowed", l)
			}
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
	}
	return nil
}

func checkDNSPattern(p string) error { return checkLabels(p, true) }

// domainRule is one DNS name pattern, the single matcher behind roles and
// NamePolicy: pattern labels are matched one to one against the last labels
// of a name, each with path.Match ('*' matches within one label); sub allows
// names with more labels in front (names below a match), bare allows a name
// with exactly the pattern's labels.
type domainRule struct {
	pattern   string
	sub, bare bool
}

// match reports whether the rule allows name. With covering, a leading "*"
// label of name stands for any label: the rule then matches when it
// matches any name the wildcard name covers (what a deny list must see).
func (d domainRule) match(name string, covering bool) bool {
	pl, nl := strings.Split(d.pattern, "."), strings.Split(name, ".")
	extra := len(nl) - len(pl)
	if extra < 0 {
		return false
	}
	for i, p := range pl {
		l := nl[extra+i]
		if covering && extra+i == 0 && l == "*" {
			continue
		}
		if ok, _ := path.Match(p, l); !ok {
			return false
		}
	}
	switch {
	case extra > 0:
		return d.sub
	case strings.Contains(d.pattern, "*"):
		return true
	default:
		return d.bare
	}
}

// matchDomain reports whether the role entry pattern allows name.
func (r *Role) matchDomain(pattern, name string) bool {
	return domainRule{pattern: pattern, sub: r.AllowSubdomains, bare: r.AllowBareDomains || !r.AllowSubdomains}.match(name, false)
}

// allowDNS checks a DNS name of a request and returns it in lower case.
func (r *Role) allowDNS(name string) (string, error) {
	n := strings.ToLower(name)
	if err := checkLabels(n, false); err != nil {
		return "", fmt.Errorf("%w: DNS name %q: %v", ErrInvalid, name, err)
	}
	if strings.HasPrefix(n, "*.") && !r.AllowWildcardCertificates {
		return "", fmt.Errorf("%w: DNS name %q: role %q does not allow wildcard certificates", ErrInvalid, name, r.Name)
	}
	for _, p := range r.AllowedDomains {
		if r.matchDomain(p, n) {
			return n, nil
		}
	}
	return "", fmt.Errorf("%w: DNS name %q is not allowed by role %q", ErrInvalid, name, r.Name)
}

// allowIP checks an IP address of a request.
func (r *Role) allowIP(ip net.IP) error {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return fmt.Errorf("%w: malformed IP address", ErrInvalid)
	}
	a = a.Unmap()
	for _, s := range r.AllowedIPRanges {
		if p, err := netip.ParsePrefix(s); err == nil && p.Contains(a) {
			return nil
		}
	}
	return fmt.Errorf("%w: IP address %s is not allowed by role %q", ErrInvalid, a, r.Name)
}

// allowURI checks a URI SAN of a request. SPIFFE IDs must also be
// well-formed: no port, user info, query or fragment, and a path of
// non-empty segments other than "." and "..".
func (r *Role) allowURI(u *url.URL) error {
	s := u.String()
	switch {
	case u.Scheme == "" || u.Host == "" || u.Opaque != "":
		return fmt.Errorf("%w: URI SAN %q needs a scheme and a host", ErrInvalid, s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("%w: URI SAN %q must not have user info, a query or a fragment", ErrInvalid, s)
	}
	var segs []string
	if u.Path != "" {
		segs = strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	}
	if strings.EqualFold(u.Scheme, "spiffe") {
		if u.Port() != "" || u.Host != strings.ToLower(u.Host) || slices.ContainsFunc(segs, func(s string) bool { return s == "" || s == "." || s == ".." }) {
			return fmt.Errorf("%w: URI SAN %q is not a valid SPIFFE ID", ErrInvalid, s)
		}
	}
	for _, ps := range r.AllowedURISANs {
		p, err := parseURIPattern(ps)
		if err != nil || p.scheme != strings.ToLower(u.Scheme) || p.host != strings.ToLower(u.Host) || len(p.segments) != len(segs) {
			continue
		}
		ok := true
		for i := range segs {
			if m, _ := path.Match(p.segments[i], segs[i]); !m {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("%w: URI SAN %q is not allowed by role %q", ErrInvalid, s, r.Name)
}

// allowKey checks a public key against the role.
func (r *Role) allowKey(pub crypto.PublicKey) error {
	if err := checkKeyType(pub, r.AllowedKeyTypes, r.MinRSABits); err != nil {
		return fmt.Errorf("%w (role %q)", err, r.Name)
	}
	return nil
}

// KeyTypeNames are the key type names roles and ACME provisioners allow.
func KeyTypeNames() []string { return slices.Clone(roleKeyTypes) }

// CheckKeyType returns an error matching ErrInvalid unless pub is of one of
// the allowed key types (see KeyTypeNames) and, for RSA, of 2048 to 8192
// bits. Empty allowed takes the default: all but ecdsa-p521.
func CheckKeyType(pub crypto.PublicKey, allowed []string) error {
	if len(allowed) == 0 {
		allowed = defaultKeyTypes
	}
	return checkKeyType(pub, allowed, 2048)
}

func checkKeyType(pub crypto.PublicKey, allowed []string, minRSABits int) error {
	var t string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < max(minRSABits, 2048) || bits > 8192 {
			return fmt.Errorf("%w: RSA key of %d bits: %d to 8192 are allowed", ErrInvalid, bits, max(minRSABits, 2048))
		}
		t = "rsa"
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			t = "ecdsa-p256"
		case elliptic.P384():
			t = "ecdsa-p384"
		case elliptic.P521():
			t = "ecdsa-p521"
		default:
			return fmt.Errorf("%w: ECDSA curve %s is not supported", ErrInvalid, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		t = "ed25519"
	default:
		return fmt.Errorf("%w: public key type %T is not supported", ErrInvalid, pub)
	}
	if !slices.Contains(allowed, t) {
		return fmt.Errorf("%w: key type %s is not allowed (allowed: %s)", ErrInvalid, t, strings.Join(allowed, ", "))
	}
	return nil
}

// usages returns the key usage and extended key usages of a certificate
// for a key of type pub.
func (r *Role) usages(pub crypto.PublicKey) (x509.KeyUsage, []x509.ExtKeyUsage) {
	var ku x509.KeyUsage
	_, isRSA := pub.(*rsa.PublicKey)
	for _, u := range r.KeyUsage {
		if !isRSA && (u == "key_encipherment" || u == "data_encipherment") {
			continue
		}
		ku |= keyUsages[u]
	}
	var eku []x509.ExtKeyUsage
	add := func(u x509.ExtKeyUsage) {
		if !slices.Contains(eku, u) {
			eku = append(eku, u)
		}
	}
	if r.ServerFlag {
		add(x509.ExtKeyUsageServerAuth)
	}
	if r.ClientFlag {
		add(x509.ExtKeyUsageClientAuth)
	}
	for _, u := range r.ExtKeyUsage {
		add(extKeyUsages[u])
	}
	return ku, eku
}

// CheckDNSName returns nil if the role allows name (a DNS name, or a
// wildcard name such as *.example.com) in a certificate, else an error
// matching ErrInvalid.
func (r *Role) CheckDNSName(name string) error {
	_, err := r.allowDNS(name)
	return err
}

// CheckIP returns nil if the role allows ip in a certificate.
func (r *Role) CheckIP(ip net.IP) error { return r.allowIP(ip) }

// CheckKey returns nil if the role allows the public key.
func (r *Role) CheckKey(pub crypto.PublicKey) error { return r.allowKey(pub) }

// CheckCertificate returns nil if the role, as it stands, would issue a
// certificate with cert's names (DNS names, IP addresses, URIs and common
// name) and extended key usages for pub, of the given lifetime: what a
// renewal or rekey of cert must pass.
func (r *Role) CheckCertificate(cert *x509.Certificate, pub crypto.PublicKey, lifetime time.Duration) error {
	if err := r.allowKey(pub); err != nil {
		return err
	}
	if lifetime > r.MaxTTL {
		return fmt.Errorf("%w: lifetime %v is over the maximum %v of role %q", ErrInvalid, lifetime, r.MaxTTL, r.Name)
	}
	if len(cert.EmailAddresses) > 0 {
		return fmt.Errorf("%w: email SANs are not supported", ErrInvalid)
	}
	for _, d := range cert.DNSNames {
		if _, err := r.allowDNS(d); err != nil {
			return err
		}
	}
	for _, ip := range cert.IPAddresses {
		if err := r.allowIP(ip); err != nil {
			return err
		}
	}
	for _, u := range cert.URIs {
		if err := r.allowURI(u); err != nil {
			return err
		}
	}
	if _, err := r.checkCommonName(cert.Subject.CommonName, cert.IPAddresses, cert.URIs); err != nil {
		return err
	}
	_, eku := r.usages(pub)
	for _, u := range cert.ExtKeyUsage {
		if !slices.Contains(eku, u) {
			return fmt.Errorf("%w: extended key usage %d is no longer allowed by role %q", ErrInvalid, u, r.Name)
		}
	}
	return nil
}

// NamePolicy is a list of names a certificate may and may not hold, for
// ACME provisioners. It matches with the same code as roles. An entry is
//   - an exact DNS name: "host.example.com";
//   - "*." and a name: any one label in front of it ("*.example.com" allows
//     a.example.com, not a.b.example.com nor example.com);
//   - "." and a name: every name below it, at any depth (".example.com"
//     allows a.b.example.com, not example.com);
//   - an IP address or a CIDR: "192.0.2.7", "10.0.0.0/8", "2001:db8::/32".
//
// A name must match an Allowed entry (an empty Allowed allows every name)
// and no Denied entry: deny wins. A wildcard name (*.example.com) also
// needs AllowWildcards, is allowed like a name whose first label is '*'
// (by "*.example.com" or ".example.com"), and is denied when a Denied
// entry matches any name it covers. Names are compared in lower case.
type NamePolicy struct {
	Allowed        []string
	Denied         []string
	AllowWildcards bool
}

// nameEntry is a parsed NamePolicy entry: a DNS rule or an IP prefix.
type nameEntry struct {
	dns    domainRule
	prefix netip.Prefix
	isIP   bool
}

func parseNameEntry(s string) (nameEntry, error) {
	if strings.ContainsAny(s, ":/") || net.ParseIP(s) != nil {
		p, err := parsePrefix(s)
		if err != nil {
			return nameEntry{}, fmt.Errorf("%w: name entry %q: not an IP address or CIDR", ErrInvalid, s)
		}
		return nameEntry{prefix: p, isIP: true}, nil
	}
	e := nameEntry{dns: domainRule{pattern: strings.ToLower(s), bare: true}}
	name := e.dns.pattern
	switch {
	case strings.HasPrefix(name, "*."):
		name = name[2:]
	case strings.HasPrefix(name, "."):
		name = name[1:]
		e.dns = domainRule{pattern: name, sub: true}
	}
	if err := checkLabels(name, false); err != nil || strings.Contains(name, "*") {
		return nameEntry{}, fmt.Errorf("%w: name entry %q: want a DNS name, *.name, .name, an IP address or a CIDR", ErrInvalid, s)
	}
	return e, nil
}

// Normalize checks every entry and returns the policy with its entries in
// canonical form (lower case, CIDRs masked); errors match ErrInvalid and
// name the entry.
func (p NamePolicy) Normalize() (NamePolicy, error) {
	out := NamePolicy{AllowWildcards: p.AllowWildcards}
	norm := func(list []string) ([]string, error) {
		var o []string
		for _, s := range list {
			e, err := parseNameEntry(s)
			if err != nil {
				return nil, err
			}
			v := e.prefix.String()
			if !e.isIP {
				v = strings.ToLower(s)
			}
			if !slices.Contains(o, v) {
				o = append(o, v)
			}
		}
		return o, nil
	}
	var err error
	if out.Allowed, err = norm(p.Allowed); err != nil {
		return NamePolicy{}, err
	}
	if out.Denied, err = norm(p.Denied); err != nil {
		return NamePolicy{}, err
	}
	return out, nil
}

// CheckDNSName returns nil if the policy allows name, else an error
// matching ErrInvalid that says why.
func (p NamePolicy) CheckDNSName(name string) error {
	n := strings.ToLower(name)
	if err := checkLabels(n, false); err != nil {
		return fmt.Errorf("%w: DNS name %q: %v", ErrInvalid, name, err)
	}
	wild := strings.HasPrefix(n, "*.")
	if wild && !p.AllowWildcards {
		return fmt.Errorf("%w: wildcard name %q is not allowed", ErrInvalid, name)
	}
	for _, s := range p.Denied {
		if e, err := parseNameEntry(s); err != nil || !e.isIP && e.dns.match(n, true) {
			return fmt.Errorf("%w: DNS name %q is denied", ErrInvalid, name)
		}
	}
	if len(p.Allowed) == 0 {
		return nil
	}
	for _, s := range p.Allowed {
		if e, err := parseNameEntry(s); err == nil && !e.isIP && e.dns.match(n, false) {
			return nil
		}
	}
	return fmt.Errorf("%w: DNS name %q is not allowed", ErrInvalid, name)
}

// CheckIP returns nil if the policy allows ip, else an error matching
// ErrInvalid.
func (p NamePolicy) CheckIP(ip net.IP) error {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return fmt.Errorf("%w: malformed IP address", ErrInvalid)
	}
	a = a.Unmap()
	for _, s := range p.Denied {
		if e, err := parseNameEntry(s); err != nil || e.isIP && e.prefix.Contains(a) {
			return fmt.Errorf("%w: IP address %s is denied", ErrInvalid, a)
		}
	}
	if len(p.Allowed) == 0 {
		return nil
	}
	for _, s := range p.Allowed {
		if e, err := parseNameEntry(s); err == nil && e.isIP && e.prefix.Contains(a) {
			return nil
		}
	}
	return fmt.Errorf("%w: IP address %s is not allowed", ErrInvalid, a)
}
