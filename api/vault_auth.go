package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/go-chi/chi/v5"
)

// The Vault API's token and certificate auth, and sys routes. The token
// routes have the native paths, so their policy paths are the same.
func (s *Server) vaultTokenRoutes() []route {
	post, get := http.MethodPost, http.MethodGet
	const tok = "/v1/auth/token/"
	return []route{
		{method: post, pattern: tok + "create", cap: auth.CapUpdate, op: "token-create", h: handle(withAuth(s, vaultTokenCreate))},
		{method: get, pattern: tok + "lookup-self", cap: auth.CapRead, op: "token-lookup-self", h: handle(withAuth(s, vaultLookupSelf))},
		{method: post, pattern: tok + "lookup-self", cap: auth.CapRead, op: "token-lookup-self", h: handle(withAuth(s, vaultLookupSelf))},
		{method: post, pattern: tok + "lookup", cap: auth.CapUpdate, op: "token-lookup", h: handle(withAuth(s, vaultLookup))},
		{method: post, pattern: tok + "lookup-accessor", cap: auth.CapUpdate, op: "token-lookup", h: handle(withAuth(s, vaultLookup))},
		{method: post, pattern: tok + "renew-self", cap: auth.CapUpdate, op: "token-renew-self", h: handle(withAuth(s, vaultRenew(true)))},
		{method: post, pattern: tok + "renew", cap: auth.CapUpdate, op: "token-renew", h: handle(withAuth(s, vaultRenew(false)))},
		{method: post, pattern: tok + "renew-accessor", cap: auth.CapUpdate, op: "token-renew", h: handle(withAuth(s, vaultRenew(false)))},
		{method: post, pattern: tok + "revoke-self", cap: auth.CapUpdate, op: "token-revoke-self", h: handle(withAuth(s, tokenRevokeSelf))},
		{method: post, pattern: tok + "revoke", cap: auth.CapUpdate, op: "token-revoke", h: handle(withAuth(s, vaultRevoke))},
		{method: post, pattern: tok + "revoke-accessor", cap: auth.CapUpdate, op: "token-revoke", h: handle(withAuth(s, vaultRevoke))},
		{method: post, pattern: "/v1/auth/cert/login", public: true, op: "cert-login", h: handle(withAuth(s, vaultCertLogin))},
	}
}

// vaultTokenCreateRequest is auth/token/create as Vault takes it. Fields
// custos has no use for (entity_alias, no_default_policy, ...) are ignored.
type vaultTokenCreateRequest struct {
	Policies       vStrings          `json:"policies"`
	TTL            vDuration         `json:"ttl"`
	ExplicitMaxTTL vDuration         `json:"explicit_max_ttl"`
	NumUses        vInt              `json:"num_uses"`
	Type           string            `json:"type"`
	Renewable      *vBool            `json:"renewable"`
	DisplayName    string            `json:"display_name"`
	Meta           map[string]string `json:"meta"`
	Period         vDuration         `json:"period"`
	ID             string            `json:"id"`
}

// vaultAuth is the auth block of Vault's envelope.
type vaultAuth struct {
	ClientToken   string            `json:"client_token"`
	Accessor      string            `json:"accessor"`
	Policies      []string          `json:"policies"`
	TokenPolicies []string          `json:"token_policies"`
	Metadata      map[string]string `json:"metadata"`
	LeaseDuration int64             `json:"lease_duration"`
	Renewable     bool              `json:"renewable"`
	EntityID      string            `json:"entity_id"`
	TokenType     string            `json:"token_type"`
	Orphan        bool              `json:"orphan"`
	NumUses       int               `json:"num_uses"`
}

func ttlLeft(t *auth.Token) int64 {
	if t.ExpiresAt.IsZero() {
		return 0
	}
	return max(0, seconds(time.Until(t.ExpiresAt)))
}

func authBlock(tok string, t *auth.Token) *vaultResponse {
	return &vaultResponse{Auth: &vaultAuth{
		ClientToken: tok, Accessor: t.Accessor, Policies: t.Policies, TokenPolicies: t.Policies,
		Metadata: t.Meta, LeaseDuration: ttlLeft(t), Renewable: t.Renewable, TokenType: "service",
		Orphan: t.Parent == "", NumUses: t.NumUses,
	}}
}

func vaultTokenCreate(r *http.Request, a *auth.Service, req *vaultTokenCreateRequest) (any, error) {
	switch {
	case req.Type != "" && req.Type != "service" && req.Type != "default":
		return nil, invalid("token type %q: custos issues service tokens only", req.Type)
	case req.ID != "":
		return nil, invalid("id: custos chooses token values")
	case req.Period != 0:
		return nil, invalid("period: periodic tokens are not supported")
	}
	renewable := true
	if req.Renewable != nil {
		renewable = bool(*req.Renewable)
	}
	_, parent := caller(r)
	tok, t, err := a.CreateToken(r.Context(), parent, auth.TokenRequest{
		Policies: req.Policies, TTL: time.Duration(req.TTL), MaxTTL: time.Duration(req.ExplicitMaxTTL), Renewable: renewable,
		DisplayName: req.DisplayName, Meta: req.Meta, NumUses: int(req.NumUses),
	})
	if err != nil {
		return nil, err
	}
	return authBlock(tok, t), nil
}

// vaultTokenData is a token as Vault's lookup answers it.
type vaultTokenData struct {
	Accessor       string            `json:"accessor"`
	CreationTime   int64             `json:"creation_time"`
	CreationTTL    int64             `json:"creation_ttl"`
	DisplayName    string            `json:"display_name"`
	EntityID       string            `json:"entity_id"`
	ExpireTime     *time.Time        `json:"expire_time"`
	ExplicitMaxTTL int64             `json:"explicit_max_ttl"`
	ID             string            `json:"id"`
	IssueTime      time.Time         `json:"issue_time"`
	Meta           map[string]string `json:"meta"`
	NumUses        int               `json:"num_uses"`
	Orphan         bool              `json:"orphan"`
	Path           string            `json:"path"`
	Policies       []string          `json:"policies"`
	Renewable      bool              `json:"renewable"`
	TTL            int64             `json:"ttl"`
	Type           string            `json:"type"`
}

func tokenData(tok string, t *auth.Token) vaultTokenData {
	d := vaultTokenData{
		Accessor: t.Accessor, CreationTime: t.CreatedAt.Unix(), CreationTTL: seconds(t.TTL), DisplayName: t.DisplayName,
		ID: tok, IssueTime: t.CreatedAt, Meta: t.Meta, NumUses: t.NumUses, Orphan: t.Parent == "",
		Path: "auth/token/create", Policies: t.Policies, Renewable: t.Renewable, TTL: ttlLeft(t), Type: "service",
	}
	if !t.ExpiresAt.IsZero() {
		e := t.ExpiresAt
		d.ExpireTime = &e
	}
	if !t.MaxExpiresAt.IsZero() {
		d.ExplicitMaxTTL = seconds(t.MaxExpiresAt.Sub(t.CreatedAt))
	}
	if t.Parent == "" && t.DisplayName != "" && strings.HasPrefix(t.DisplayName, "cert") {
		d.Path = "auth/cert/login"
	}
	return d
}

func vaultLookupSelf(r *http.Request, _ *auth.Service, _ *noBody) (any, error) {
	t, tok := caller(r)
	return tokenData(tok, t), nil
}

// vaultTokenRequest names a token by value or accessor, with a renewal
// increment.
type vaultTokenRequest struct {
	Token     string    `json:"token"`
	Accessor  string    `json:"accessor"`
	Increment vDuration `json:"increment"`
}

func (q *vaultTokenRequest) target(r *http.Request) (*TokenRequest, error) {
	if strings.HasSuffix(r.URL.Path, "-accessor") {
		q.Token = ""
	} else {
		q.Accessor = ""
	}
	tr := &TokenRequest{Token: q.Token, Accessor: q.Accessor}
	return tr, checkTarget(tr)
}

func vaultLookup(r *http.Request, a *auth.Service, req *vaultTokenRequest) (any, error) {
	tr, err := req.target(r)
	if err != nil {
		return nil, err
	}
	resp, err := tokenLookup(r, a, tr)
	if err != nil {
		return nil, err
	}
	t := resp.(TokenResponse).Token
	return tokenData(tr.Token, &t), nil
}

func vaultRenew(self bool) func(r *http.Request, a *auth.Service, req *vaultTokenRequest) (any, error) {
	return func(r *http.Request, a *auth.Service, req *vaultTokenRequest) (any, error) {
		inc := time.Duration(req.Increment)
		var (
			t   *auth.Token
			tok string
			err error
		)
		switch {
		case self:
			_, tok = caller(r)
			t, err = a.Renew(r.Context(), tok, inc)
		default:
			var tr *TokenRequest
			if tr, err = req.target(r); err != nil {
				return nil, err
			}
			if tok = tr.Token; tok != "" {
				t, err = a.Renew(r.Context(), tok, inc)
			} else {
				t, err = a.RenewAccessor(r.Context(), tr.Accessor, inc)
			}
		}
		if err != nil {
			return nil, err
		}
		return authBlock(tok, t), nil
	}
}

func vaultRevoke(r *http.Request, a *auth.Service, req *vaultTokenRequest) (any, error) {
	tr, err := req.target(r)
	if err != nil {
		return nil, err
	}
	return tokenRevoke(r, a, tr)
}

// vaultCertLoginRequest is auth/cert/login: name is the role.
type vaultCertLoginRequest struct {
	Name string `json:"name"`
}

func vaultCertLogin(r *http.Request, a *auth.Service, req *vaultCertLoginRequest) (any, error) {
	resp, err := certLogin(r, a, &CertLoginRequest{Role: req.Name})
	if err != nil {
		return nil, err
	}
	tr := resp.(TokenResponse)
	return authBlock(tr.ClientToken, &tr.Token), nil
}

// The sys routes of the Vault API.
func (s *Server) vaultSysRoutes() []route {
	get := http.MethodGet
	return []route{
		{method: get, pattern: "/v1/sys/health", public: true, op: "health", h: s.vaultHealth},
		{method: http.MethodHead, pattern: "/v1/sys/health", public: true, op: "health", h: s.vaultHealth},
		{method: get, pattern: "/v1/sys/seal-status", public: true, op: "seal-status", h: s.vaultSealStatus},
		{method: get, pattern: "/v1/sys/leader", public: true, op: "leader", h: s.vaultLeader},
		{method: get, pattern: "/v1/sys/mounts", cap: auth.CapList, op: "mount-list", h: handle(withServices(s, vaultMounts))},
		{method: get, pattern: "/v1/sys/internal/ui/mounts/*", anyToken: true, op: "mount-read", h: handle(withServices(s, vaultMountOf))},
	}
}

// vaultHealth answers as Vault's sys/health, with its query parameters:
// standbyok, activecode, standbycode, sealedcode, uninitcode.
func (s *Server) vaultHealth(w http.ResponseWriter, r *http.Request) {
	h := s.node.Health(r.Context())
	q := r.URL.Query()
	code := func(name string, def int) int {
		if v, err := parseVaultStatus(q.Get(name)); err == nil && v != 0 {
			return v
		}
		return def
	}
	standbyOK, _ := boolQuery(r, "standbyok")
	status := code("activecode", http.StatusOK)
	switch {
	case !h.Initialized:
		status = code("uninitcode", http.StatusNotImplemented)
	case h.Sealed:
		status = code("sealedcode", http.StatusServiceUnavailable)
	case (h.Standby || !h.HasLeader) && !standbyOK:
		status = code("standbycode", http.StatusTooManyRequests)
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	respond(w, r, vaultRaw{status: status, body: map[string]any{
		"initialized": h.Initialized, "sealed": h.Sealed, "standby": h.Standby, "performance_standby": false,
		"replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
		"server_time_utc": h.ServerTime.Unix(), "version": h.Version, "cluster_name": "custos", "cluster_id": "",
	}}, nil)
}

func parseVaultStatus(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	n, err := vIntOf(v)
	if err != nil || n < 100 || n > 599 {
		return 0, invalid("status code %q", v)
	}
	return int(n), nil
}

func vIntOf(s string) (vInt, error) {
	var v vInt
	err := v.UnmarshalJSON([]byte(s))
	return v, err
}

func (s *Server) vaultSealStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.node.SealStatus(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	respond(w, r, vaultRaw{body: map[string]any{
		"type": st.Type, "initialized": st.Initialized, "sealed": st.Sealed, "t": st.Threshold, "n": st.Shares,
		"progress": st.Progress, "nonce": "", "version": s.node.Health(r.Context()).Version, "build_date": "",
		"migration": false, "recovery_seal": false, "storage_type": "raft", "cluster_name": "custos", "cluster_id": "",
	}}, nil)
}

func (s *Server) vaultLeader(w http.ResponseWriter, r *http.Request) {
	h := s.node.Health(r.Context())
	respond(w, r, vaultRaw{body: map[string]any{
		"ha_enabled": true, "is_self": h.HasLeader && h.LeaderID == h.NodeID, "leader_address": h.LeaderID,
		"leader_cluster_address": h.LeaderID, "performance_standby": false, "active_time": time.Time{},
	}}, nil)
}

// vaultMount is one mount in sys/mounts.
type vaultMount struct {
	Type        string            `json:"type"`
	Description string            `json:"description"`
	Accessor    string            `json:"accessor"`
	Options     map[string]string `json:"options"`
	Config      map[string]any    `json:"config"`
	Local       bool              `json:"local"`
	SealWrap    bool              `json:"seal_wrap"`
}

func kvMount(name string) vaultMount {
	return vaultMount{Type: "kv", Description: "custos secret mount", Accessor: "kv_" + name, Options: map[string]string{"version": "2"},
		Config: map[string]any{"default_lease_ttl": 0, "max_lease_ttl": 0}}
}

func vaultMounts(r *http.Request, svc *Services, _ *noBody) (any, error) {
	out := map[string]vaultMount{
		"sys/":     {Type: "system", Description: "system endpoints", Accessor: "system", Config: map[string]any{}},
		"transit/": {Type: "transit", Description: "custos kms", Accessor: "transit", Config: map[string]any{}},
	}
	if svc.Secrets != nil {
		ms, err := svc.Secrets.ListMounts(r.Context())
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			out[m.Name+"/"] = kvMount(m.Name)
		}
	}
	return out, nil
}

// vaultMountOf is sys/internal/ui/mounts/<path>: which mount a path is in,
// and that a KV mount is version 2, as the vault CLI's kv commands ask.
func vaultMountOf(r *http.Request, svc *Services, _ *noBody) (any, error) {
	p := strings.Trim(chi.URLParam(r, "*"), "/")
	name, _, _ := strings.Cut(p, "/")
	if name == "transit" {
		return map[string]any{"path": "transit/", "type": "transit", "options": nil, "description": "custos kms"}, nil
	}
	if svc.Secrets == nil {
		return nil, errNoSecrets
	}
	if _, err := svc.Secrets.Mount(r.Context(), name); err != nil {
		return nil, err
	}
	m := kvMount(name)
	return map[string]any{"path": name + "/", "type": m.Type, "options": m.Options, "description": m.Description, "config": m.Config}, nil
}
