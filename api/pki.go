package api

import (
	"encoding/pem"
	"fmt"
	"net/http"

	"github.com/custos-pki/custos/ca"
	"github.com/go-chi/chi/v5"
)

// PKIMaxBodyBytes caps a request body on the PKI handler: the only body it
// takes is an OCSP request, which is a few hundred bytes.
const PKIMaxBodyBytes = 16 << 10

// pkiRoutes are what relying parties fetch, without a token: the roots, the
// chain, each intermediate's certificate (the caIssuers URL of the AIA
// extension), the CRLs and OCSP. The certificates custos issues point at
// the CRL, OCSP and issuer routes (ca.Config.URLBase). They are served on
// the HTTPS API and, alone, by PKIHandler.
func (s *Server) pkiRoutes() []route {
	get, post := http.MethodGet, http.MethodPost
	return []route{
		{method: get, pattern: "/v1/ca/roots", public: true, op: "ca-roots", h: s.caRoots},
		{method: get, pattern: "/v1/ca/chain", public: true, op: "ca-chain", h: s.caChain},
		{method: get, pattern: "/v1/ca/issuer/{issuer}", public: true, op: "ca-issuer", h: s.caIssuerCert},
		{method: get, pattern: "/v1/ca/crl", public: true, op: "ca-crl", h: s.caCRL},
		{method: get, pattern: "/v1/ca/crl/{issuer}", public: true, op: "ca-crl", h: s.caCRL},
		{method: get, pattern: "/v1/ca/ocsp/*", public: true, op: "ca-ocsp", h: s.caOCSP},
		{method: post, pattern: "/v1/ca/ocsp", public: true, op: "ca-ocsp", h: s.caOCSP},
	}
}

// PKIHandler serves the PKI routes and nothing else (every other path is
// 404), for a plain-HTTP listener: RFC 5280 has relying parties fetch CRLs
// and issuer certificates over http, and OCSP (RFC 6960) is served over
// http too, since its answers are signed. It takes no token, and bodies
// are capped at PKIMaxBodyBytes. The handlers, metrics and audit entries
// are those of the HTTPS API.
func (s *Server) PKIHandler() http.Handler {
	mux := chi.NewRouter()
	mux.Use(s.recoverer, s.begin, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, PKIMaxBodyBytes)
			next.ServeHTTP(w, r)
		})
	})
	mux.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, Errorf(http.StatusNotFound, CodeNotFound, "no route for %s", r.URL.Path))
	})
	mux.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, Errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
	})
	for _, rt := range s.pkiRoutes() {
		mux.Method(rt.method, rt.pattern, s.wrap(rt))
	}
	return mux
}

// caIssuerCert sends the certificate of a live intermediate, by ID: DER as
// application/pkix-cert, as RFC 5280 section 4.2.2.1 asks of a caIssuers
// URL, or PEM with ?format=pem.
func (s *Server) caIssuerCert(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format != "" && format != "der" && format != "pem" {
		writeError(w, r, invalid("format %q: want der or pem", format))
		return
	}
	c, err := s.caService()
	var all []ca.IssuerInfo
	if err == nil {
		all, err = c.Issuers(r.Context())
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	id := chi.URLParam(r, "issuer")
	for _, iss := range all {
		if iss.ID != id {
			continue
		}
		if format == "pem" {
			w.Header().Set("Content-Type", "application/x-pem-file")
			_, _ = w.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: iss.Certificate.Raw}))
			return
		}
		w.Header().Set("Content-Type", "application/pkix-cert")
		_, _ = w.Write(iss.Certificate.Raw)
		return
	}
	writeError(w, r, fmt.Errorf("%w: no issuer %q", ca.ErrNotFound, id))
}
