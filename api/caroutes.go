package api

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/ca"
	"github.com/go-chi/chi/v5"
	"golang.org/x/crypto/ocsp"
)

// The certificate authority's endpoints, besides the public PKI routes
// (pkiRoutes). Certificates and CSRs travel in PEM; durations as Go
// durations ("72h").
func (s *Server) caRoutes() []route {
	get, post, put, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	sudo := auth.CapUpdate | auth.CapSudo
	return []route{
		{method: post, pattern: "/v1/ca/init", cap: sudo, op: "ca-init", h: handle(withCA(s, s.caInit))},
		{method: get, pattern: "/v1/ca/roles", cap: auth.CapList, op: "ca-role-list", h: handle(withCA(s, s.caRoleList))},
		{method: get, pattern: "/v1/ca/roles/{name}", cap: auth.CapRead, op: "ca-role-read", h: handle(withCA(s, s.caRoleRead))},
		{method: put, pattern: "/v1/ca/roles/{name}", cap: auth.CapUpdate, op: "ca-role-write", h: handle(withCA(s, s.caRoleWrite))},
		{method: post, pattern: "/v1/ca/roles/{name}", cap: auth.CapUpdate, op: "ca-role-write", h: handle(withCA(s, s.caRoleWrite))},
		{method: del, pattern: "/v1/ca/roles/{name}", cap: auth.CapDelete, op: "ca-role-delete", h: handle(withCA(s, s.caRoleDelete))},
		{method: post, pattern: "/v1/ca/sign/{role}", cap: auth.CapUpdate, op: "ca-sign", h: handle(withCA(s, s.caSign))},
		{method: post, pattern: "/v1/ca/issue/{role}", cap: auth.CapUpdate, op: "ca-issue", h: handle(withCA(s, s.caIssue))},
		{method: get, pattern: "/v1/ca/certs", cap: auth.CapList, op: "ca-cert-list", h: handle(withCA(s, s.caCertList))},
		{method: get, pattern: "/v1/ca/certs/{serial}", cap: auth.CapRead, op: "ca-cert-read", h: handle(withCA(s, s.caCertRead))},
		{method: post, pattern: "/v1/ca/revoke", cap: auth.CapUpdate, op: "ca-revoke", h: handle(withCA(s, s.caRevoke))},
		{method: post, pattern: "/v1/ca/intermediate/csr", cap: sudo, op: "ca-intermediate-csr", h: handle(withCA(s, s.caIntermediateCSR))},
		{method: post, pattern: "/v1/ca/intermediate/set", cap: sudo, op: "ca-intermediate-set", h: handle(withCA(s, s.caIntermediateSet))},
		{method: post, pattern: "/v1/ca/intermediate/rotate", cap: sudo, op: "ca-intermediate-rotate", h: handle(withCA(s, s.caIntermediateRotate))},
	}
}

// CAInitRequest is POST /v1/ca/init; empty fields take the node's defaults.
type CAInitRequest struct {
	CommonName      string `json:"common_name"`
	KeyType         string `json:"key_type"`
	RootTTL         string `json:"root_ttl"`
	IntermediateTTL string `json:"intermediate_ttl"`
}

// CAChainResponse answers init and the intermediate calls: the active
// chain in PEM, intermediate first.
type CAChainResponse struct {
	Chain []string `json:"chain"`
}

// CARole is a role, as written and read at /v1/ca/roles/{name}. See
// ca.Role for the meaning of the fields; server_flag and client_flag are
// true when absent.
type CARole struct {
	Name                      string   `json:"name,omitempty"`
	AllowedDomains            []string `json:"allowed_domains"`
	AllowSubdomains           bool     `json:"allow_subdomains"`
	AllowBareDomains          bool     `json:"allow_bare_domains"`
	AllowWildcardCertificates bool     `json:"allow_wildcard_certificates"`
	AllowedIPRanges           []string `json:"allowed_ip_ranges"`
	AllowedURISANs            []string `json:"allowed_uri_sans"`
	AllowedKeyTypes           []string `json:"allowed_key_types"`
	MinRSABits                int      `json:"min_rsa_bits"`
	TTL                       string   `json:"ttl"`
	MaxTTL                    string   `json:"max_ttl"`
	KeyUsage                  []string `json:"key_usage"`
	ExtKeyUsage               []string `json:"ext_key_usage"`
	ServerFlag                *bool    `json:"server_flag"`
	ClientFlag                *bool    `json:"client_flag"`
	RequireCommonName         bool     `json:"require_common_name"`
}

// CASignRequest is POST /v1/ca/sign/{role}.
type CASignRequest struct {
	CSR string `json:"csr"`
	TTL string `json:"ttl"`
}

// CAIssueRequest is POST /v1/ca/issue/{role}.
type CAIssueRequest struct {
	CommonName  string   `json:"common_name"`
	DNSNames    []string `json:"dns_names"`
	IPAddresses []string `json:"ip_addresses"`
	URISANs     []string `json:"uri_sans"`
	TTL         string   `json:"ttl"`
	KeyType     string   `json:"key_type"`
}

// CACertificateResponse answers sign and issue. PrivateKey (PKCS #8 PEM)
// comes from issue only and is not kept by custos.
type CACertificateResponse struct {
	Certificate string    `json:"certificate"`
	PrivateKey  string    `json:"private_key,omitempty"`
	Chain       []string  `json:"chain"`
	Serial      string    `json:"serial"`
	Expiration  time.Time `json:"expiration"`
}

// CACert is one certificate of the inventory; Certificate (PEM) is left
// out of lists.
type CACert struct {
	Serial           string    `json:"serial"`
	Issuer           string    `json:"issuer"`
	Source           string    `json:"source"`
	Role             string    `json:"role,omitempty"`
	Status           ca.Status `json:"status"`
	CommonName       string    `json:"common_name,omitempty"`
	DNSNames         []string  `json:"dns_names,omitempty"`
	IPAddresses      []string  `json:"ip_addresses,omitempty"`
	URISANs          []string  `json:"uri_sans,omitempty"`
	NotBefore        time.Time `json:"not_before"`
	NotAfter         time.Time `json:"not_after"`
	RevokedAt        time.Time `json:"revoked_at,omitzero"`
	RevocationReason int       `json:"revocation_reason,omitempty"`
	Certificate      string    `json:"certificate,omitempty"`
}

// CACertList answers GET /v1/ca/certs; pass next as after for the next
// page ("" on the last).
type CACertList struct {
	Certs []CACert `json:"certs"`
	Next  string   `json:"next,omitempty"`
}

// CARevokeRequest is POST /v1/ca/revoke; reason is an RFC 5280 CRLReason.
type CARevokeRequest struct {
	Serial string `json:"serial"`
	Reason int    `json:"reason"`
}

// CACSRResponse answers POST /v1/ca/intermediate/csr.
type CACSRResponse struct {
	CSR string `json:"csr"`
}

// CASetIntermediateRequest is POST /v1/ca/intermediate/set: the signed
// intermediate, then its issuers up to the root, in PEM.
type CASetIntermediateRequest struct {
	Certificate string `json:"certificate"`
}

// caService returns the node's certificate authority.
func (s *Server) caService() (*ca.CA, error) {
	svc, err := s.node.Services()
	if err != nil {
		return nil, err
	}
	if svc.CA == nil {
		return nil, errNoCA
	}
	return svc.CA, nil
}

func caPEMCert(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func caPEMChain(chain []*x509.Certificate) []string {
	out := make([]string, len(chain))
	for i, c := range chain {
		out[i] = caPEMCert(c)
	}
	return out
}

// caWriteCerts sends certificates in PEM, or with ?format=der in DER: one
// certificate as application/pkix-cert, several concatenated.
func caWriteCerts(w http.ResponseWriter, r *http.Request, certs []*x509.Certificate) {
	var body []byte
	switch f := r.URL.Query().Get("format"); f {
	case "", "pem":
		for _, c := range certs {
			body = append(body, caPEMCert(c)...)
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
	case "der":
		for _, c := range certs {
			body = append(body, c.Raw...)
		}
		w.Header().Set("Content-Type", "application/pkix-cert")
		if len(certs) > 1 {
			w.Header().Set("Content-Type", "application/octet-stream")
		}
	default:
		writeError(w, r, invalid("format %q: want pem or der", f))
		return
	}
	_, _ = w.Write(body)
}

// caRoots sends the roots (PEM), or the active root alone (DER).
func (s *Server) caRoots(w http.ResponseWriter, r *http.Request) {
	c, err := s.caService()
	var roots []*x509.Certificate
	if err == nil {
		roots, err = c.Roots(r.Context())
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	if r.URL.Query().Get("format") == "der" {
		roots = roots[:1]
	}
	caWriteCerts(w, r, roots)
}

// caChain sends the active chain, intermediate first.
func (s *Server) caChain(w http.ResponseWriter, r *http.Request) {
	c, err := s.caService()
	var chain []*x509.Certificate
	if err == nil {
		_, chain, err = c.Issuer(r.Context())
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	caWriteCerts(w, r, chain)
}

// caCRL sends the CRL of the active intermediate, or of the one named in
// the path, in DER (?format=pem for PEM).
func (s *Server) caCRL(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format != "" && format != "der" && format != "pem" {
		writeError(w, r, invalid("format %q: want der or pem", format))
		return
	}
	c, err := s.caService()
	var der []byte
	if err == nil {
		if id := chi.URLParam(r, "issuer"); id != "" {
			der, err = c.IssuerCRL(r.Context(), id)
		} else {
			der, err = c.CRL(r.Context())
		}
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	if format == "pem" {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(der)
}

// caOCSP answers RFC 6960 requests: POST with the DER request as the body,
// or GET with it in base64 as the last part of the path. Errors are OCSP
// error responses, as the protocol wants, not JSON.
func (s *Server) caOCSP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/ocsp-response")
	send := func(b []byte, err error) {
		if err != nil {
			if st := reqState(r.Context()); st != nil {
				st.internal = err
			}
		}
		_, _ = w.Write(b)
	}
	var req []byte
	var err error
	if r.Method == http.MethodPost {
		req, err = io.ReadAll(r.Body)
	} else {
		req, err = caOCSPFromPath(chi.URLParam(r, "*"))
	}
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			writeError(w, r, decodeError(err))
			return
		}
		send(ocsp.MalformedRequestErrorResponse, nil)
		return
	}
	c, err := s.caService()
	if err != nil {
		send(ocsp.TryLaterErrorResponse, nil)
		return
	}
	send(c.OCSP(r.Context(), req))
}

// caOCSPFromPath decodes a GET request: base64 (RFC 6960, appendix A.1), URL
// escaped or not, padded or not.
func caOCSPFromPath(p string) ([]byte, error) {
	if u, err := url.PathUnescape(p); err == nil {
		p = u
	}
	p = strings.TrimRight(p, "=")
	if b, err := base64.RawStdEncoding.DecodeString(p); err == nil {
		return b, nil
	}
	return base64.RawURLEncoding.DecodeString(p)
}

func (s *Server) caInit(r *http.Request, c *ca.CA, req *CAInitRequest) (any, error) {
	rootTTL, err := duration("root_ttl", req.RootTTL)
	if err != nil {
		return nil, err
	}
	intTTL, err := duration("intermediate_ttl", req.IntermediateTTL)
	if err != nil {
		return nil, err
	}
	chain, err := c.Init(r.Context(), ca.InitOptions{CommonName: req.CommonName, KeyType: req.KeyType, RootTTL: rootTTL, IntermediateTTL: intTTL})
	if err != nil {
		return nil, err
	}
	return CAChainResponse{Chain: caPEMChain(chain)}, nil
}

func (s *Server) caRoleList(r *http.Request, c *ca.CA, _ *struct{}) (any, error) {
	names, err := c.ListRoles(r.Context())
	if err != nil {
		return nil, err
	}
	return ListResponse{Keys: names}, nil
}

func (s *Server) caRoleRead(r *http.Request, c *ca.CA, _ *struct{}) (any, error) {
	role, err := c.ReadRole(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return nil, err
	}
	return caRoleOut(role), nil
}

func (s *Server) caRoleWrite(r *http.Request, c *ca.CA, req *CARole) (any, error) {
	name := chi.URLParam(r, "name")
	if req.Name != "" && req.Name != name {
		return nil, invalid("name %q does not match the path", req.Name)
	}
	ttl, err := duration("ttl", req.TTL)
	if err != nil {
		return nil, err
	}
	maxTTL, err := duration("max_ttl", req.MaxTTL)
	if err != nil {
		return nil, err
	}
	flag := func(b *bool) bool { return b == nil || *b }
	role, err := c.WriteRole(r.Context(), ca.Role{
		Name: name, AllowedDomains: req.AllowedDomains, AllowSubdomains: req.AllowSubdomains,
		AllowBareDomains: req.AllowBareDomains, AllowWildcardCertificates: req.AllowWildcardCertificates,
		AllowedIPRanges: req.AllowedIPRanges, AllowedURISANs: req.AllowedURISANs,
		AllowedKeyTypes: req.AllowedKeyTypes, MinRSABits: req.MinRSABits, TTL: ttl, MaxTTL: maxTTL,
		KeyUsage: req.KeyUsage, ExtKeyUsage: req.ExtKeyUsage, ServerFlag: flag(req.ServerFlag),
		ClientFlag: flag(req.ClientFlag), RequireCommonName: req.RequireCommonName,
	})
	if err != nil {
		return nil, err
	}
	return caRoleOut(role), nil
}

func caRoleOut(r ca.Role) CARole {
	return CARole{
		Name: r.Name, AllowedDomains: r.AllowedDomains, AllowSubdomains: r.AllowSubdomains,
		AllowBareDomains: r.AllowBareDomains, AllowWildcardCertificates: r.AllowWildcardCertificates,
		AllowedIPRanges: r.AllowedIPRanges, AllowedURISANs: r.AllowedURISANs, AllowedKeyTypes: r.AllowedKeyTypes,
		MinRSABits: r.MinRSABits, TTL: r.TTL.String(), MaxTTL: r.MaxTTL.String(), KeyUsage: r.KeyUsage,
		ExtKeyUsage: r.ExtKeyUsage, ServerFlag: &r.ServerFlag, ClientFlag: &r.ClientFlag, RequireCommonName: r.RequireCommonName,
	}
}

func (s *Server) caRoleDelete(r *http.Request, c *ca.CA, _ *struct{}) (any, error) {
	if err := c.DeleteRole(r.Context(), chi.URLParam(r, "name")); err != nil {
		return nil, err
	}
	return nil, nil
}

func (s *Server) caSign(r *http.Request, c *ca.CA, req *CASignRequest) (any, error) {
	ttl, err := duration("ttl", req.TTL)
	if err != nil {
		return nil, err
	}
	if req.CSR == "" {
		return nil, invalid("csr is required")
	}
	return caIssuedOut(c.Sign(r.Context(), chi.URLParam(r, "role"), []byte(req.CSR), ca.SignOptions{TTL: ttl}))
}

func (s *Server) caIssue(r *http.Request, c *ca.CA, req *CAIssueRequest) (any, error) {
	ttl, err := duration("ttl", req.TTL)
	if err != nil {
		return nil, err
	}
	ir := ca.IssueRequest{CommonName: req.CommonName, DNSNames: req.DNSNames, URIs: req.URISANs, TTL: ttl, KeyType: req.KeyType}
	for _, a := range req.IPAddresses {
		ip := net.ParseIP(a)
		if ip == nil {
			return nil, invalid("ip_addresses: %q is not an IP address", a)
		}
		ir.IPs = append(ir.IPs, ip)
	}
	return caIssuedOut(c.Issue(r.Context(), chi.URLParam(r, "role"), ir))
}

func caIssuedOut(is *ca.Issued, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return CACertificateResponse{
		Certificate: caPEMCert(is.Certificate), PrivateKey: string(is.PrivateKey),
		Chain: caPEMChain(is.Chain), Serial: is.Serial, Expiration: is.Certificate.NotAfter,
	}, nil
}

func (s *Server) caCertList(r *http.Request, c *ca.CA, _ *struct{}) (any, error) {
	q := r.URL.Query()
	f := ca.Filter{Serial: q.Get("serial"), SAN: q.Get("san"), Role: q.Get("role"), Status: ca.Status(q.Get("status")), After: q.Get("after")}
	var err error
	if f.ExpiringWithin, err = duration("expiring", q.Get("expiring")); err != nil {
		return nil, err
	}
	if v := q.Get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 0 {
			return nil, invalid("limit %q: want a number", v)
		}
	}
	page, err := c.List(r.Context(), f)
	if err != nil {
		return nil, err
	}
	out := CACertList{Certs: []CACert{}, Next: page.Next}
	for _, ct := range page.Certs {
		out.Certs = append(out.Certs, caCertOut(ct, false))
	}
	return out, nil
}

func caCertOut(c ca.Cert, withPEM bool) CACert {
	x := c.Certificate
	out := CACert{
		Serial: c.Serial, Issuer: c.Issuer, Source: c.Source, Role: c.Role, Status: c.Status,
		CommonName: x.Subject.CommonName, DNSNames: x.DNSNames, NotBefore: x.NotBefore, NotAfter: x.NotAfter,
		RevokedAt: c.RevokedAt, RevocationReason: c.RevocationReason,
	}
	for _, ip := range x.IPAddresses {
		out.IPAddresses = append(out.IPAddresses, ip.String())
	}
	for _, u := range x.URIs {
		out.URISANs = append(out.URISANs, u.String())
	}
	if withPEM {
		out.Certificate = caPEMCert(x)
	}
	return out
}

func (s *Server) caCertRead(r *http.Request, c *ca.CA, _ *struct{}) (any, error) {
	ct, err := c.Get(r.Context(), chi.URLParam(r, "serial"))
	if err != nil {
		return nil, err
	}
	return caCertOut(ct, true), nil
}

func (s *Server) caRevoke(r *http.Request, c *ca.CA, req *CARevokeRequest) (any, error) {
	if req.Serial == "" {
		return nil, invalid("serial is required")
	}
	ct, err := c.Revoke(r.Context(), req.Serial, req.Reason)
	if err != nil {
		return nil, err
	}
	return caCertOut(ct, false), nil
}

func (s *Server) caIntermediateCSR(r *http.Request, c *ca.CA, _ *struct{}) (any, error) {
	csr, err := c.IntermediateCSR(r.Context())
	if err != nil {
		return nil, err
	}
	return CACSRResponse{CSR: string(csr)}, nil
}

func (s *Server) caIntermediateSet(r *http.Request, c *ca.CA, req *CASetIntermediateRequest) (any, error) {
	if req.Certificate == "" {
		return nil, invalid("certificate is required")
	}
	if err := c.SetIntermediate(r.Context(), []byte(req.Certificate)); err != nil {
		return nil, err
	}
	return caChainOf(r, c)
}

func (s *Server) caIntermediateRotate(r *http.Request, c *ca.CA, _ *struct{}) (any, error) {
	chain, err := c.RotateIntermediate(r.Context())
	if err != nil {
		return nil, err
	}
	return CAChainResponse{Chain: caPEMChain(chain)}, nil
}

func caChainOf(r *http.Request, c *ca.CA) (any, error) {
	_, chain, err := c.Issuer(r.Context())
	if err != nil {
		return nil, fmt.Errorf("read the new chain: %w", err)
	}
	return CAChainResponse{Chain: caPEMChain(chain)}, nil
}
