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

// matchDomain reports whether the role entry pattern allows name.
func (r *Role) matchDomain(pattern, name string) bool {
	pl, nl := strings.Split(pattern, "."), strings.Split(name, ".")
	extra := len(nl) - len(pl)
	if extra < 0 {
		return false
	}
	for i, p := range pl {
		if ok, _ := path.Match(p, nl[extra+i]); !ok {
			return false
		}
	}
	switch {
	case extra > 0:
		return r.AllowSubdomains
	case strings.Contains(pattern, "*"):
		return true
	default:
		return r.AllowBareDomains || !r.AllowSubdomains
	}
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
	var t string
	switch k := pub.(type) {
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < max(r.MinRSABits, 2048) || bits > 8192 {
			return fmt.Errorf("%w: RSA key of %d bits: role %q needs %d to 8192", ErrInvalid, bits, r.Name, max(r.MinRSABits, 2048))
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
	if !slices.Contains(r.AllowedKeyTypes, t) {
		return fmt.Errorf("%w: key type %s is not allowed by role %q (allowed: %s)", ErrInvalid, t, r.Name, strings.Join(r.AllowedKeyTypes, ", "))
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
