package api

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/go-chi/chi/v5"
)

var jsonUnmarshal = json.Unmarshal

func (s *Server) authRoutes() []route {
	return []route{
		{method: http.MethodPost, pattern: "/v1/auth/token/create", cap: auth.CapUpdate, op: "token-create", h: s.tokenCreate},
		{method: http.MethodGet, pattern: "/v1/auth/token/lookup-self", cap: auth.CapRead, op: "token-lookup-self", h: s.tokenLookupSelf},
		{method: http.MethodPost, pattern: "/v1/auth/token/lookup", cap: auth.CapUpdate, op: "token-lookup", h: s.tokenLookup},
		{method: http.MethodPost, pattern: "/v1/auth/token/renew-self", cap: auth.CapUpdate, op: "token-renew-self", h: s.tokenRenewSelf},
		{method: http.MethodPost, pattern: "/v1/auth/token/renew", cap: auth.CapUpdate, op: "token-renew", h: s.tokenRenew},
		{method: http.MethodPost, pattern: "/v1/auth/token/revoke-self", cap: auth.CapUpdate, op: "token-revoke-self", h: s.tokenRevokeSelf},
		{method: http.MethodPost, pattern: "/v1/auth/token/revoke", cap: auth.CapUpdate, op: "token-revoke", h: s.tokenRevoke},
		{method: http.MethodPost, pattern: "/v1/auth/cert/login", public: true, op: "cert-login", h: s.certLogin},
		{method: http.MethodGet, pattern: "/v1/auth/cert/roles", cap: auth.CapList, op: "cert-role-list", h: s.certRoleList},
		{method: http.MethodGet, pattern: "/v1/auth/cert/roles/{name}", cap: auth.CapRead, op: "cert-role-read", h: s.certRoleRead},
		{method: http.MethodPut, pattern: "/v1/auth/cert/roles/{name}", cap: auth.CapUpdate, op: "cert-role-write", h: s.certRoleWrite},
		{method: http.MethodPost, pattern: "/v1/auth/cert/roles/{name}", cap: auth.CapUpdate, op: "cert-role-write", h: s.certRoleWrite},
		{method: http.MethodDelete, pattern: "/v1/auth/cert/roles/{name}", cap: auth.CapDelete, op: "cert-role-delete", h: s.certRoleDelete},
	}
}

// duration parses an optional Go duration field.
func duration(field, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, invalid("%s: %q is not a duration such as 1h or 30m", field, v)
	}
	return d, nil
}

func (s *Server) tokenCreate(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	var req TokenCreateRequest
	if err := decode(r, &req); err != nil {
		writeError(w, r, err)
		return
	}
	ttl, err := duration("ttl", req.TTL)
	if err != nil {
		writeError(w, r, err)
		return
	}
	maxTTL, err := duration("max_ttl", req.MaxTTL)
	if err != nil {
		writeError(w, r, err)
		return
	}
	renewable := true
	if req.Renewable != nil {
		renewable = *req.Renewable
	}
	_, parent := caller(r)
	tok, t, err := svc.Auth.CreateToken(r.Context(), parent, auth.TokenRequest{
		Policies: req.Policies, TTL: ttl, MaxTTL: maxTTL, Renewable: renewable,
		DisplayName: req.DisplayName, Meta: req.Meta, NumUses: req.NumUses,
	})
	if err != nil {
		writeError(w, r, err)
		return
	}
	ok(w, TokenResponse{ClientToken: tok, Token: *t})
}

func (s *Server) tokenLookupSelf(w http.ResponseWriter, r *http.Request) {
	t, _ := caller(r)
	ok(w, TokenResponse{Token: *t})
}

// tokenTarget reads a TokenRequest naming a token by value or accessor.
func tokenTarget(w http.ResponseWriter, r *http.Request) (TokenRequest, bool) {
	var req TokenRequest
	if err := decode(r, &req); err != nil {
		writeError(w, r, err)
		return req, false
	}
	if (req.Token == "") == (req.Accessor == "") {
		writeError(w, r, invalid("give exactly one of token and accessor"))
		return req, false
	}
	return req, true
}

func (s *Server) tokenLookup(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	req, ok2 := tokenTarget(w, r)
	if !ok2 {
		return
	}
	var (
		t   *auth.Token
		err error
	)
	if req.Token != "" {
		t, err = svc.Auth.Lookup(r.Context(), req.Token)
	} else {
		t, err = svc.Auth.LookupAccessor(r.Context(), req.Accessor)
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	ok(w, TokenResponse{Token: *t})
}

func (s *Server) tokenRenewSelf(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	var req struct {
		Increment string `json:"increment"`
	}
	if err := decode(r, &req); err != nil {
		writeError(w, r, err)
		return
	}
	inc, err := duration("increment", req.Increment)
	if err != nil {
		writeError(w, r, err)
		return
	}
	_, tok := caller(r)
	t, err := svc.Auth.Renew(r.Context(), tok, inc)
	if err != nil {
		writeError(w, r, err)
		return
	}
	ok(w, TokenResponse{Token: *t})
}

func (s *Server) tokenRenew(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	req, ok2 := tokenTarget(w, r)
	if !ok2 {
		return
	}
	inc, err := duration("increment", req.Increment)
	if err != nil {
		writeError(w, r, err)
		return
	}
	var t *auth.Token
	if req.Token != "" {
		t, err = svc.Auth.Renew(r.Context(), req.Token, inc)
	} else {
		t, err = svc.Auth.RenewAccessor(r.Context(), req.Accessor, inc)
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	ok(w, TokenResponse{Token: *t})
}

func (s *Server) tokenRevokeSelf(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	_, tok := caller(r)
	if err := svc.Auth.Revoke(r.Context(), tok); err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) tokenRevoke(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	req, ok2 := tokenTarget(w, r)
	if !ok2 {
		return
	}
	var err error
	if req.Token != "" {
		err = svc.Auth.Revoke(r.Context(), req.Token)
	} else {
		err = svc.Auth.RevokeAccessor(r.Context(), req.Accessor)
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) certLogin(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	var req CertLoginRequest
	if err := decode(r, &req); err != nil {
		writeError(w, r, err)
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		writeError(w, r, Errorf(http.StatusUnauthorized, CodeUnauthenticated, "certificate login needs a TLS client certificate"))
		return
	}
	tok, t, err := svc.Auth.LoginWithCert(r.Context(), r.TLS.PeerCertificates, req.Role)
	if err != nil {
		writeError(w, r, err)
		return
	}
	ok(w, TokenResponse{ClientToken: tok, Token: *t})
}

func (s *Server) certRoleList(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	names, err := svc.Auth.ListCertRoles(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	ok(w, ListResponse{Keys: names})
}

func (s *Server) certRoleRead(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	role, err := svc.Auth.ReadCertRole(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	ok(w, role)
}

func (s *Server) certRoleWrite(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	var role auth.CertRole
	if err := decode(r, &role); err != nil {
		writeError(w, r, err)
		return
	}
	if role.Name != "" && role.Name != chi.URLParam(r, "name") {
		writeError(w, r, invalid("name in the body differs from the path"))
		return
	}
	role.Name = chi.URLParam(r, "name")
	if err := svc.Auth.WriteCertRole(r.Context(), role); err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) certRoleDelete(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	if err := svc.Auth.DeleteCertRole(r.Context(), chi.URLParam(r, "name")); err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
