package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/custos-pki/custos/audit"
	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/ca/stepca"
	"github.com/go-chi/chi/v5"
)

// EABRequest is POST /v1/ca/acme/eab: a new external account binding key
// for an ACME provisioner (empty: the default one, "acme"), optionally
// named by a reference. The key is good for that provisioner only.
type EABRequest struct {
	Provisioner string `json:"provisioner"`
	Reference   string `json:"reference"`
}

// EABResponse carries the key ID and the HMAC key (base64url), shown once.
type EABResponse struct {
	KeyID       string `json:"key_id"`
	HMACKey     string `json:"hmac_key"`
	Reference   string `json:"reference,omitempty"`
	Provisioner string `json:"provisioner"`
}

// ACMEProvisioner is an ACME provisioner, as written and read at
// /v1/ca/acme/provisioners[/{name}]; see stepca.ACMEProvisioner for the
// fields. max_lifetime is a Go duration ("720h"); empty takes the CA's.
type ACMEProvisioner struct {
	Name           string   `json:"name"`
	AllowedNames   []string `json:"allowed_names"`
	DeniedNames    []string `json:"denied_names"`
	AllowWildcards bool     `json:"allow_wildcards"`
	MaxLifetime    string   `json:"max_lifetime"`
	KeyTypes       []string `json:"key_types"`
	RequireEAB     bool     `json:"require_eab"`
	Role           string   `json:"role,omitempty"`
	// Directory is where ACME clients start (read only).
	Directory string `json:"directory,omitempty"`
}

// ACMEProvisionerList answers GET /v1/ca/acme/provisioners.
type ACMEProvisionerList struct {
	Provisioners []ACMEProvisioner `json:"provisioners"`
}

func (s *Server) acmeRoutes() []route {
	get, post, put, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	return []route{
		{method: post, pattern: "/v1/ca/acme/eab", cap: auth.CapUpdate | auth.CapSudo, op: "acme-eab-create", h: handle(withACME(s, s.eabCreate))},
		{method: get, pattern: "/v1/ca/acme/provisioners", cap: auth.CapList, op: "acme-provisioner-list", h: handle(withACME(s, s.acmeProvList))},
		{method: post, pattern: "/v1/ca/acme/provisioners", cap: auth.CapCreate, op: "acme-provisioner-create", h: handle(withACME(s, s.acmeProvCreate))},
		{method: get, pattern: "/v1/ca/acme/provisioners/{name}", cap: auth.CapRead, op: "acme-provisioner-read", h: handle(withACME(s, s.acmeProvRead))},
		{method: put, pattern: "/v1/ca/acme/provisioners/{name}", cap: auth.CapUpdate, op: "acme-provisioner-update", h: handle(withACME(s, s.acmeProvUpdate))},
		{method: del, pattern: "/v1/ca/acme/provisioners/{name}", cap: auth.CapDelete, op: "acme-provisioner-delete", h: handle(withACME(s, s.acmeProvDelete))},
		{method: get, pattern: "/v1/ca/step/provisioners", cap: auth.CapList, op: "step-provisioner-list", h: handle(withACME(s, s.stepProvList))},
		{method: post, pattern: "/v1/ca/step/provisioners", cap: auth.CapCreate, op: "step-provisioner-create", h: handle(withACME(s, s.stepProvCreate))},
		{method: get, pattern: "/v1/ca/step/provisioners/{name}", cap: auth.CapRead, op: "step-provisioner-read", h: handle(withACME(s, s.stepProvRead))},
		{method: del, pattern: "/v1/ca/step/provisioners/{name}", cap: auth.CapDelete, op: "step-provisioner-delete", h: handle(withACME(s, s.stepProvDelete))},
		// step's CLI fetches the CRL at /crl: package ca's, as at /v1/ca/crl.
		{method: get, pattern: "/crl", public: true, op: "ca-crl", h: s.stepCRL},
	}
}

// withACME adapts a handler of the node's step-ca, once the CA is
// initialised.
func withACME[Req any](s *Server, fn func(r *http.Request, a *stepca.Server, req *Req) (any, error)) handlerFunc[Req] {
	return withServices(s, func(r *http.Request, svc *Services, req *Req) (any, error) {
		if svc.ACME == nil {
			return nil, Errorf(http.StatusNotFound, CodeNotFound, "the certificate authority is not initialised")
		}
		return fn(r, svc.ACME, req)
	})
}

func (s *Server) eabCreate(r *http.Request, a *stepca.Server, req *EABRequest) (any, error) {
	if len(req.Reference) > 256 {
		return nil, invalid("reference is longer than 256 characters")
	}
	k, err := a.CreateEABKey(r.Context(), req.Provisioner, req.Reference)
	if err != nil {
		return nil, err
	}
	return EABResponse{KeyID: k.KeyID, HMACKey: base64.RawURLEncoding.EncodeToString(k.HMACKey), Reference: k.Reference, Provisioner: k.Provisioner}, nil
}

func acmeProvIn(name string, req *ACMEProvisioner) (stepca.ACMEProvisioner, error) {
	if req.Name != "" && req.Name != name {
		return stepca.ACMEProvisioner{}, invalid("name %q does not match the path", req.Name)
	}
	if req.Directory != "" {
		return stepca.ACMEProvisioner{}, invalid("directory is read only")
	}
	maxLife, err := duration("max_lifetime", req.MaxLifetime)
	if err != nil {
		return stepca.ACMEProvisioner{}, err
	}
	return stepca.ACMEProvisioner{
		Name: name, AllowedNames: req.AllowedNames, DeniedNames: req.DeniedNames, AllowWildcards: req.AllowWildcards,
		MaxLifetime: maxLife, KeyTypes: req.KeyTypes, RequireEAB: req.RequireEAB, Role: req.Role,
	}, nil
}

func acmeProvOut(p stepca.ACMEProvisioner) ACMEProvisioner {
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	return ACMEProvisioner{
		Name: p.Name, AllowedNames: nonNil(p.AllowedNames), DeniedNames: nonNil(p.DeniedNames), AllowWildcards: p.AllowWildcards,
		MaxLifetime: p.MaxLifetime.String(), KeyTypes: nonNil(p.KeyTypes), RequireEAB: p.RequireEAB, Role: p.Role,
		Directory: "/acme/" + p.Name + "/directory",
	}
}

func (s *Server) acmeProvList(r *http.Request, a *stepca.Server, _ *noBody) (any, error) {
	provs, err := a.ACMEProvisioners(r.Context())
	if err != nil {
		return nil, err
	}
	out := ACMEProvisionerList{Provisioners: []ACMEProvisioner{}}
	for _, p := range provs {
		out.Provisioners = append(out.Provisioners, acmeProvOut(p))
	}
	return out, nil
}

func (s *Server) acmeProvCreate(r *http.Request, a *stepca.Server, req *ACMEProvisioner) (any, error) {
	if req.Name == "" {
		return nil, invalid("name is required")
	}
	p, err := acmeProvIn(req.Name, req)
	if err == nil {
		p, err = a.CreateACMEProvisioner(r.Context(), p)
	}
	if err != nil {
		return nil, err
	}
	return acmeProvOut(p), nil
}

func (s *Server) acmeProvRead(r *http.Request, a *stepca.Server, _ *noBody) (any, error) {
	p, err := a.ACMEProvisioner(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return nil, err
	}
	return acmeProvOut(p), nil
}

func (s *Server) acmeProvUpdate(r *http.Request, a *stepca.Server, req *ACMEProvisioner) (any, error) {
	p, err := acmeProvIn(chi.URLParam(r, "name"), req)
	if err == nil {
		p, err = a.UpdateACMEProvisioner(r.Context(), p)
	}
	if err != nil {
		return nil, err
	}
	return acmeProvOut(p), nil
}

func (s *Server) acmeProvDelete(r *http.Request, a *stepca.Server, _ *noBody) (any, error) {
	return nil, a.DeleteACMEProvisioner(r.Context(), chi.URLParam(r, "name"))
}

// stepPaths are where step-ca's handlers live: ACME under /acme/ and
// step's own API (for the step CLI) at its root paths. ACME authenticates
// itself (JWS, optional EAB), so these need no token.
var stepPaths = []string{
	"/acme/", "/1.0/", "/version", "/health", "/root/", "/sign", "/renew",
	"/rekey", "/revoke", "/provisioners", "/provisioners/", "/roots", "/roots.pem",
	"/intermediates", "/intermediates.pem", "/federation",
}

// mountStep routes step-ca's paths. ACME runs on the leader: a follower
// forwards the request there, so that one node orders each account's
// requests and owns its nonces. step's API is served on any node. Every
// body is capped (stepBody) before anything else happens.
func (s *Server) mountStep() {
	for _, p := range stepPaths {
		pattern := p
		if strings.HasSuffix(p, "/") {
			pattern += "*"
		}
		acme := p == "/acme/"
		s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.serveStep(w, r, acme)
		}))
	}
}

// stepMaxBody caps the body of a request to step-ca's paths (or the API's
// limit, if lower): an ACME JWS or a step request (a token and a CSR) is a
// few KiB. It matches step-ca's own cap on ACME bodies.
const stepMaxBody = 64 << 10

func (s *Server) serveStep(w http.ResponseWriter, r *http.Request, acme bool) {
	if !s.stepBody(w, r, acme) {
		return
	}
	svc, ok := s.services(w, r)
	if !ok {
		return
	}
	if svc.Step == nil {
		writeError(w, r, Errorf(http.StatusNotFound, CodeNotFound, "the certificate authority is not initialised"))
		return
	}
	if acme {
		proxy, err := s.node.LeaderProxy(r.Context())
		if err != nil {
			writeError(w, r, err)
			return
		}
		if proxy != nil {
			proxy.ServeHTTP(w, r)
			return
		}
	}
	// Past the client's ACME request limit the leader refuses before the
	// audit line: a flood must not fill the disk.
	if acme && svc.ACME != nil && !svc.ACME.Admit(w, r) {
		return
	}
	if svc.Audit != nil {
		e := &audit.Entry{Type: audit.TypeRequest, RequestID: requestID(r.Context()), RemoteAddr: r.RemoteAddr,
			Method: r.Method, Path: r.URL.Path, Operation: "step"}
		if err := svc.Audit.Log(e); err != nil {
			writeError(w, r, err)
			return
		}
	}
	svc.Step.ServeHTTP(w, r)
}

// stepBody reads the body of a request to step-ca's paths, up to the limit,
// before it is forwarded, audited or seen by step-ca. It refuses a larger
// one with 413 (body_too_large), or for ACME with the malformed problem
// step-ca itself sends, and reports whether the request may go on.
func (s *Server) stepBody(w http.ResponseWriter, r *http.Request, acme bool) bool {
	limit := min(s.maxBody, stepMaxBody)
	var e *Error
	if r.ContentLength > limit {
		e = Errorf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "request body is over the limit of %d bytes", limit)
	} else if body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		if e = decodeError(err); e.Code != CodeBodyTooLarge {
			e = invalid("cannot read the request body")
		}
	} else {
		r.Body, r.ContentLength = http.NoBody, 0
		if len(body) > 0 {
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		return true
	}
	if acme {
		writeACMEProblem(w, r, e)
	} else {
		writeError(w, r, e)
	}
	return false
}

// writeACMEProblem answers an ACME request refused before step-ca saw it
// with an RFC 8555 problem document: malformed for a request at fault,
// serverInternal otherwise.
func writeACMEProblem(w http.ResponseWriter, r *http.Request, e *Error) {
	typ, status := "serverInternal", http.StatusInternalServerError
	if e.Status < 500 {
		typ, status = "malformed", http.StatusBadRequest
	}
	if rs := reqState(r.Context()); rs != nil {
		rs.errCode = e.Code
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"type": "urn:ietf:params:acme:error:" + typ, "detail": e.Message})
}

// StepProvisioner is a JWK provisioner for the step CLI, as written and
// read at /v1/ca/step/provisioners[/{name}]. The policy fields are an ACME
// provisioner's. password (write only, 8 to 1024 bytes) encrypts the
// private key custos makes; step's CLI asks for it. kid is read only.
type StepProvisioner struct {
	Name           string   `json:"name"`
	AllowedNames   []string `json:"allowed_names"`
	DeniedNames    []string `json:"denied_names"`
	AllowWildcards bool     `json:"allow_wildcards"`
	MaxLifetime    string   `json:"max_lifetime"`
	KeyTypes       []string `json:"key_types"`
	Role           string   `json:"role,omitempty"`
	Password       string   `json:"password,omitempty"`
	KeyID          string   `json:"kid,omitempty"`
}

// StepProvisionerList answers GET /v1/ca/step/provisioners.
type StepProvisionerList struct {
	Provisioners []StepProvisioner `json:"provisioners"`
}

func stepProvOut(p stepca.JWKProvisioner) StepProvisioner {
	a := acmeProvOut(stepca.ACMEProvisioner{Name: p.Name, AllowedNames: p.AllowedNames, DeniedNames: p.DeniedNames,
		AllowWildcards: p.AllowWildcards, MaxLifetime: p.MaxLifetime, KeyTypes: p.KeyTypes, Role: p.Role})
	return StepProvisioner{Name: p.Name, AllowedNames: a.AllowedNames, DeniedNames: a.DeniedNames, AllowWildcards: p.AllowWildcards,
		MaxLifetime: a.MaxLifetime, KeyTypes: a.KeyTypes, Role: p.Role, KeyID: p.KeyID()}
}

func (s *Server) stepProvList(r *http.Request, a *stepca.Server, _ *noBody) (any, error) {
	provs, err := a.JWKProvisioners(r.Context())
	if err != nil {
		return nil, err
	}
	out := StepProvisionerList{Provisioners: []StepProvisioner{}}
	for _, p := range provs {
		out.Provisioners = append(out.Provisioners, stepProvOut(p))
	}
	return out, nil
}

func (s *Server) stepProvCreate(r *http.Request, a *stepca.Server, req *StepProvisioner) (any, error) {
	switch {
	case req.Name == "":
		return nil, invalid("name is required")
	case req.KeyID != "":
		return nil, invalid("kid is read only")
	}
	maxLife, err := duration("max_lifetime", req.MaxLifetime)
	if err != nil {
		return nil, err
	}
	pw := []byte(req.Password)
	defer clear(pw)
	p, err := a.CreateJWKProvisioner(r.Context(), stepca.JWKProvisioner{
		Name: req.Name, AllowedNames: req.AllowedNames, DeniedNames: req.DeniedNames, AllowWildcards: req.AllowWildcards,
		MaxLifetime: maxLife, KeyTypes: req.KeyTypes, Role: req.Role,
	}, pw)
	if err != nil {
		return nil, err
	}
	return stepProvOut(p), nil
}

func (s *Server) stepProvRead(r *http.Request, a *stepca.Server, _ *noBody) (any, error) {
	p, err := a.JWKProvisioner(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return nil, err
	}
	return stepProvOut(p), nil
}

func (s *Server) stepProvDelete(r *http.Request, a *stepca.Server, _ *noBody) (any, error) {
	return nil, a.DeleteJWKProvisioner(r.Context(), chi.URLParam(r, "name"))
}

// stepCRL serves package ca's CRL where step's CLI looks for it: DER, or
// PEM with step's ?pem=true.
func (s *Server) stepCRL(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := ""
	if q.Get("pem") == "true" {
		format = "pem"
	}
	q.Del("pem")
	q.Set("format", format)
	if format == "" {
		q.Del("format")
	}
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q.Encode()
	s.caCRL(w, r2)
}
