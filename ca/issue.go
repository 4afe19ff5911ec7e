package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// MaxCSRSize bounds the CSR that Sign accepts.
const MaxCSRSize = 64 << 10

// SignOptions are the options of Sign.
type SignOptions struct {
	// TTL is the certificate's lifetime; 0 takes the role's TTL. A TTL over
	// the role's MaxTTL is refused, not shortened.
	TTL time.Duration
}

// IssueRequest asks Issue for a key pair and a certificate.
type IssueRequest struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	URIs       []string
	// TTL as in SignOptions.
	TTL time.Duration
	// KeyType is ecdsa-p256 (the default), ecdsa-p384, ecdsa-p521, ed25519,
	// rsa-2048, rsa-3072 or rsa-4096.
	KeyType string
}

// Issued is a certificate the CA issued, with its chain.
type Issued struct {
	Certificate *x509.Certificate
	Chain       []*x509.Certificate // [intermediate, root]
	Serial      string              // lower-case hex
	// PrivateKey is the PKCS #8 PEM of the key Issue made; it is not kept.
	PrivateKey []byte
}

// request is what Sign and Issue check against a role and sign.
type request struct {
	pub  crypto.PublicKey
	cn   string
	dns  []string
	ips  []net.IP
	uris []*url.URL
	ttl  time.Duration
}

// Sign issues a certificate for a PEM certificate request under a role.
// The request's signature must verify, its key and every name in it must
// be allowed by the role; only its common name and SANs (DNS names, IP
// addresses, URIs) are used. Nothing is issued on any error.
func (c *CA) Sign(ctx context.Context, role string, csrPEM []byte, o SignOptions) (*Issued, error) {
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	r, err := c.ReadRole(ctx, role)
	if err != nil {
		return nil, err
	}
	return c.issue(ctx, &r, request{pub: csr.PublicKey, cn: csr.Subject.CommonName, dns: csr.DNSNames, ips: csr.IPAddresses, uris: csr.URIs, ttl: o.TTL}, "rest")
}

// parseCSR parses a PEM (or DER) certificate request and checks its
// signature.
func parseCSR(b []byte) (*x509.CertificateRequest, error) {
	if len(b) > MaxCSRSize {
		return nil, fmt.Errorf("%w: the CSR is over %d bytes", ErrInvalid, MaxCSRSize)
	}
	der := b
	if block, _ := pem.Decode(b); block != nil {
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: PEM block %q, want CERTIFICATE REQUEST", ErrInvalid, block.Type)
		}
		der = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: malformed CSR: %v", ErrInvalid, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: the CSR signature does not verify: %v", ErrInvalid, err)
	}
	if len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("%w: email SANs are not supported", ErrInvalid)
	}
	return csr, nil
}

// Issue makes a key pair and issues a certificate for it under a role. The
// private key is returned once and not kept.
func (c *CA) Issue(ctx context.Context, role string, ir IssueRequest) (*Issued, error) {
	r, err := c.ReadRole(ctx, role)
	if err != nil {
		return nil, err
	}
	req := request{cn: ir.CommonName, dns: ir.DNSNames, ips: ir.IPs, ttl: ir.TTL}
	for _, s := range ir.URIs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("%w: URI SAN %q: %v", ErrInvalid, s, err)
		}
		req.uris = append(req.uris, u)
	}
	if ir.KeyType == "" {
		ir.KeyType = "ecdsa-p256"
	}
	if _, err := c.template(&r, req, true); err != nil {
		return nil, err // refuse before paying for a key
	}
	key, err := generateKey(ir.KeyType)
	if err != nil {
		return nil, err
	}
	req.pub = key.Public()
	out, err := c.issue(ctx, &r, req, "rest")
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	out.PrivateKey = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	return out, nil
}

// CheckIssue reports whether Issue would accept ir under role (the role
// exists, allows every name, the TTL is within its maximum), without
// making a key or issuing anything. Callers that bind an identity to a
// role (the SPIFFE workload entries) check with it up front.
func (c *CA) CheckIssue(ctx context.Context, role string, ir IssueRequest) error {
	r, err := c.ReadRole(ctx, role)
	if err != nil {
		return err
	}
	req := request{cn: ir.CommonName, dns: ir.DNSNames, ips: ir.IPs, ttl: ir.TTL}
	for _, s := range ir.URIs {
		u, err := url.Parse(s)
		if err != nil {
			return fmt.Errorf("%w: URI SAN %q: %v", ErrInvalid, s, err)
		}
		req.uris = append(req.uris, u)
	}
	_, err = c.template(&r, req, true)
	return err
}

func generateKey(t string) (crypto.Signer, error) {
	switch t {
	case "ecdsa-p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ecdsa-p521":
		return ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case "rsa-2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	case "rsa-4096":
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("%w: key type %q: want ecdsa-p256, ecdsa-p384, ecdsa-p521, ed25519, rsa-2048, rsa-3072 or rsa-4096", ErrInvalid, t)
}

// issue checks req against the role, lints, signs, verifies and records.
func (c *CA) issue(ctx context.Context, r *Role, req request, source string) (*Issued, error) {
	tmpl, err := c.template(r, req, false)
	if err != nil {
		return nil, err
	}
	set, err := c.issuers(ctx)
	if err != nil {
		return nil, err
	}
	iss := set.active
	tmpl.NotAfter = minTime(tmpl.NotAfter, iss.cert.NotAfter)
	c.setURLs(tmpl, iss)
	cert, err := c.signLeaf(ctx, iss, tmpl, req.pub)
	if err != nil {
		return nil, err
	}
	if err := c.record(ctx, iss, cert, source, r.Name); err != nil {
		return nil, err
	}
	return &Issued{Certificate: cert, Chain: slices.Clone(iss.chain), Serial: serialString(cert.SerialNumber)}, nil
}

// Paths of the CA's public endpoints under Config.URLBase, as package api
// serves them on the HTTPS API and on the plain-HTTP PKI listener.
const (
	ocspPath   = "/v1/ca/ocsp"
	crlPath    = "/v1/ca/crl/"    // + issuer ID: the issuer's CRL, DER
	issuerPath = "/v1/ca/issuer/" // + issuer ID: the issuer's certificate, DER
)

var (
	oidAuthorityInfoAccess   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	oidCRLDistributionPoints = asn1.ObjectIdentifier{2, 5, 29, 31}
)

// setURLs is the one place that says where a certificate's relying parties
// find its revocation status and its issuer: the AIA extension (OCSP and
// CA issuers) and the CRL distribution point of iss, under
// Config.URLBase; nothing without a URLBase. Whatever tmpl carried before
// is replaced, also as ExtraExtensions, which a step renewal copies from
// the certificate it renews (and which crypto/x509 would prefer).
func (c *CA) setURLs(tmpl *x509.Certificate, iss *issuer) {
	tmpl.ExtraExtensions = slices.DeleteFunc(slices.Clone(tmpl.ExtraExtensions), func(e pkix.Extension) bool {
		return e.Id.Equal(oidAuthorityInfoAccess) || e.Id.Equal(oidCRLDistributionPoints)
	})
	tmpl.OCSPServer, tmpl.IssuingCertificateURL, tmpl.CRLDistributionPoints = nil, nil, nil
	if c.cfg.URLBase == "" {
		return
	}
	base := strings.TrimSuffix(c.cfg.URLBase, "/")
	tmpl.OCSPServer = []string{base + ocspPath}
	tmpl.IssuingCertificateURL = []string{base + issuerPath + iss.id}
	tmpl.CRLDistributionPoints = []string{base + crlPath + iss.id}
}

// SetURLs sets on a template built elsewhere (the step-ca embedding: ACME,
// step's /sign, /renew and /rekey) the same AIA and CRL distribution point
// that REST issuance sets, for the intermediate parent, which must be one
// of this CA's live issuers.
func (c *CA) SetURLs(ctx context.Context, tmpl, parent *x509.Certificate) error {
	set, err := c.issuers(ctx)
	if err != nil {
		return err
	}
	for _, iss := range set.all {
		if bytes.Equal(iss.cert.Raw, parent.Raw) {
			c.setURLs(tmpl, iss)
			return nil
		}
	}
	return fmt.Errorf("%w: the issuing certificate %q is not an issuer of this CA", ErrInvalid, parent.Subject.CommonName)
}

// template checks req against the role and returns the certificate to
// sign. With namesOnly it checks the names and the TTL, not the key.
func (c *CA) template(r *Role, req request, namesOnly bool) (*x509.Certificate, error) {
	if !namesOnly {
		if err := r.allowKey(req.pub); err != nil {
			return nil, err
		}
	}
	ttl := req.ttl
	switch {
	case ttl < 0:
		return nil, fmt.Errorf("%w: ttl must not be negative", ErrInvalid)
	case ttl == 0:
		ttl = r.TTL
	case ttl > r.MaxTTL:
		return nil, fmt.Errorf("%w: ttl %v is over the maximum %v of role %q", ErrInvalid, ttl, r.MaxTTL, r.Name)
	}
	var dns []string
	for _, d := range req.dns {
		n, err := r.allowDNS(d)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	var ips []net.IP
	for _, ip := range req.ips {
		if err := r.allowIP(ip); err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	var uris []*url.URL
	for _, u := range req.uris {
		if err := r.allowURI(u); err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(uris, func(v *url.URL) bool { return v.String() == u.String() }) {
			uris = append(uris, u)
		}
	}
	cn, err := r.checkCommonName(req.cn, ips, uris)
	if err != nil {
		return nil, err
	}
	if cn != "" && !slices.ContainsFunc(ips, func(ip net.IP) bool { return ip.String() == cn }) &&
		!slices.ContainsFunc(uris, func(u *url.URL) bool { return u.String() == cn }) && !slices.Contains(dns, cn) {
		dns = append(dns, cn)
	}
	if len(dns)+len(ips)+len(uris) == 0 {
		return nil, fmt.Errorf("%w: the request names no DNS name, IP address or URI", ErrInvalid)
	}
	if namesOnly {
		return nil, nil
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	skid, err := keyID(req.pub)
	if err != nil {
		return nil, err
	}
	ku, eku := r.usages(req.pub)
	now := c.now()
	return &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-c.cfg.Backdate), NotAfter: now.Add(ttl),
		DNSNames: dns, IPAddresses: ips, URIs: uris,
		KeyUsage: ku, ExtKeyUsage: eku, BasicConstraintsValid: true, SubjectKeyId: skid,
	}, nil
}

// checkCommonName returns the common name to use (lower case when it is a
// DNS name), which must be an allowed DNS name or one of the SANs.
func (r *Role) checkCommonName(cn string, ips []net.IP, uris []*url.URL) (string, error) {
	switch {
	case cn == "" && r.RequireCommonName:
		return "", fmt.Errorf("%w: role %q requires a common name", ErrInvalid, r.Name)
	case cn == "":
		return "", nil
	case len(cn) > 64:
		return "", fmt.Errorf("%w: the common name is over 64 characters", ErrInvalid)
	case slices.ContainsFunc(ips, func(ip net.IP) bool { return ip.String() == cn }),
		slices.ContainsFunc(uris, func(u *url.URL) bool { return u.String() == cn }):
		return cn, nil
	}
	n, err := r.allowDNS(cn)
	if err != nil {
		return "", fmt.Errorf("%w: common name %q is neither an allowed DNS name nor one of the SANs", ErrInvalid, cn)
	}
	return n, nil
}

// keyID is the subject key identifier of pub: SHA-256 of its
// SubjectPublicKeyInfo, truncated to 160 bits (RFC 7093, section 2).
func keyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrInvalid, err)
	}
	sum := sha256.Sum256(spki)
	return sum[:20], nil
}

// signLeaf lints the TBSCertificate iss signs from tmpl for pub, then has
// iss's key sign those very bytes in the KMS.
func (c *CA) signLeaf(ctx context.Context, iss *issuer, tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	tbs, err := c.lintTBS(iss.cert, tmpl, pub)
	if err != nil {
		return nil, err
	}
	signer, err := c.kms.Signer(ctx, iss.key, iss.keyVersion)
	if err != nil {
		return nil, err
	}
	return tbs.sign(signer)
}
