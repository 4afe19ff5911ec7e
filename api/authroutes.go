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
		{method: http.MethodPost, pattern: "/v1/auth/token/create", cap: auth.CapUpdate, op: "token-create", h: handle(withAuth(s, tokenCreate))},
		{method: http.MethodGet, pattern: "/v1/auth/token/lookup-self", cap: auth.CapRead, op: "token-lookup-self", h: handle(withAuth(s, tokenLookupSelf))},
		{method: http.MethodPost, pattern: "/v1/auth/token/lookup", cap: auth.CapUpdate, op: "token-lookup", h: handle(withAuth(s, tokenLookup))},
		{method: http.MethodPost, pattern: "/v1/auth/token/renew-self", cap: auth.CapUpdate, op: "token-renew-self", h: handle(withAuth(s, tokenRenewSelf))},
		{method: http.MethodPost, pattern: "/v1/auth/token/renew", cap: auth.CapUpdate, op: "token-renew", h: handle(withAuth(s, tokenRenew))},
		{method: http.MethodPost, pattern: "/v1/auth/token/revoke-self", cap: auth.CapUpdate, op: "token-revoke-self", h: handle(withAuth(s, tokenRevokeSelf))},
		{method: http.MethodPost, pattern: "/v1/auth/token/revoke", cap: auth.CapUpdate, op: "token-revoke", h: handle(withAuth(s, tokenRevoke))},
		{method: http.MethodPost, pattern: "/v1/auth/cert/login", public: true, op: "cert-login", h: handle(withAuth(s, certLogin))},
		{method: http.MethodGet, pattern: "/v1/auth/cert/roles", cap: auth.CapList, op: "cert-role-list", h: handle(withAuth(s, certRoleList))},
		{method: http.MethodGet, pattern: "/v1/auth/cert/roles/{name}", cap: auth.CapRead, op: "cert-role-read", h: handle(withAuth(s, certRoleRead))},
		{method: http.MethodPut, pattern: "/v1/auth/cert/roles/{name}", cap: auth.CapUpdate, op: "cert-role-write", h: handle(withAuth(s, certRoleWrite))},
		{method: http.MethodPost, pattern: "/v1/auth/cert/roles/{name}", cap: auth.CapUpdate, op: "cert-role-write", h: handle(withAuth(s, certRoleWrite))},
		{method: http.MethodDelete, pattern: "/v1/auth/cert/roles/{name}", cap: auth.CapDelete, op: "cert-role-delete", h: handle(withAuth(s, certRoleDelete))},
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

func tokenCreate(r *http.Request, a *auth.Service, req *TokenCreateRequest) (any, error) {
	ttl, err := duration("ttl", req.TTL)
	if err != nil {
		return nil, err
	}
	maxTTL, err := duration("max_ttl", req.MaxTTL)
	if err != nil {
		return nil, err
	}
	renewable := true
	if req.Renewable != nil {
		renewable = *req.Renewable
	}
	_, parent := caller(r)
	tok, t, err := a.CreateToken(r.Context(), parent, auth.TokenRequest{
		Policies: req.Policies, TTL: ttl, MaxTTL: maxTTL, Renewable: renewable,
		DisplayName: req.DisplayName, Meta: req.Meta, NumUses: req.NumUses,
	})
	if err != nil {
		return nil, err
	}
	return TokenResponse{ClientToken: tok, Token: *t}, nil
}

func tokenLookupSelf(r *http.Request, _ *auth.Service, _ *noBody) (any, error) {
	t, _ := caller(r)
	return TokenResponse{Token: *t}, nil
}

// checkTarget checks that a TokenRequest names a token by exactly one of
// value and accessor.
func checkTarget(req *TokenRequest) error {
	if (req.Token == "") == (req.Accessor == "") {
		return invalid("give exactly one of token and accessor")
	}
	return nil
}

func tokenLookup(r *http.Request, a *auth.Service, req *TokenRequest) (any, error) {
	if err := checkTarget(req); err != nil {
		return nil, err
	}
	var (
		t   *auth.Token
		err error
	)
	if req.Token != "" {
		t, err = a.Lookup(r.Context(), req.Token)
	} else {
		t, err = a.LookupAccessor(r.Context(), req.Accessor)
	}
	if err != nil {
		return nil, err
	}
	return TokenResponse{Token: *t}, nil
}

// renewSelfRequest is POST /v1/auth/token/renew-self.
type renewSelfRequest struct {
	Increment string `json:"increment"`
}

func tokenRenewSelf(r *http.Request, a *auth.Service, req *renewSelfRequest) (any, error) {
	inc, err := duration("increment", req.Increment)
	if err != nil {
		return nil, err
	}
	_, tok := caller(r)
	t, err := a.Renew(r.Context(), tok, inc)
	if err != nil {
		return nil, err
	}
	return TokenResponse{Token: *t}, nil
}

func tokenRenew(r *http.Request, a *auth.Service, req *TokenRequest) (any, error) {
	if err := checkTarget(req); err != nil {
		return nil, err
	}
	inc, err := duration("increment", req.Increment)
	if err != nil {
		return nil, err
	}
	var t *auth.Token
	if req.Token != "" {
		t, err = a.Renew(r.Context(), req.Token, inc)
	} else {
		t, err = a.RenewAccessor(r.Context(), req.Accessor, inc)
	}
	if err != nil {
		return nil, err
	}
	return TokenResponse{Token: *t}, nil
}

func tokenRevokeSelf(r *http.Request, a *auth.Service, _ *noBody) (any, error) {
	_, tok := caller(r)
	return nil, a.Revoke(r.Context(), tok)
}

func tokenRevoke(r *http.Request, a *auth.Service, req *TokenRequest) (any, error) {
	if err := checkTarget(req); err != nil {
		return nil, err
	}
	if req.Token != "" {
		return nil, a.Revoke(r.Context(), req.Token)
	}
	return nil, a.RevokeAccessor(r.Context(), req.Accessor)
}

func certLogin(r *http.Request, a *auth.Service, req *CertLoginRequest) (any, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, Errorf(http.StatusUnauthorized, CodeUnauthenticated, "certificate login needs a TLS client certificate")
	}
	tok, t, err := a.LoginWithCert(r.Context(), r.TLS.PeerCertificates, req.Role)
	if err != nil {
		return nil, err
	}
	return TokenResponse{ClientToken: tok, Token: *t}, nil
}

func certRoleList(r *http.Request, a *auth.Service, _ *noBody) (any, error) {
	names, err := a.ListCertRoles(r.Context())
	if err != nil {
		return nil, err
	}
	return ListResponse{Keys: names}, nil
}

func certRoleRead(r *http.Request, a *auth.Service, _ *noBody) (any, error) {
	return a.ReadCertRole(r.Context(), chi.URLParam(r, "name"))
}

func certRoleWrite(r *http.Request, a *auth.Service, role *auth.CertRole) (any, error) {
	if role.Name != "" && role.Name != chi.URLParam(r, "name") {
		return nil, invalid("name in the body differs from the path")
	}
	role.Name = chi.URLParam(r, "name")
	return nil, a.WriteCertRole(r.Context(), *role)
}

func certRoleDelete(r *http.Request, a *auth.Service, _ *noBody) (any, error) {
	return nil, a.DeleteCertRole(r.Context(), chi.URLParam(r, "name"))
}
