package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// The Vault-compatible API. It is a second route table over the same
// handlers, services, authentication, policies and audit as the native
// API, served on its own listener (VaultHandler) and under /vault/ on the
// API port (so VAULT_ADDR=https://node:8443/vault works). What differs is
// the wire:
//
//   - the token comes in X-Vault-Token (or X-Custos-Token, or Bearer);
//   - answers are wrapped in Vault's envelope (request_id, lease_id,
//     renewable, lease_duration, data, wrap_info, warnings, auth), errors
//     are {"errors":[...]} with Vault's status codes (403 for a missing or
//     bad token, 503 "Vault is sealed", 400 for a failed check-and-set);
//   - request bodies are decoded leniently: unknown fields are ignored, and
//     numbers, booleans and durations may be JSON strings, as Vault takes
//     them;
//   - PUT is POST, and LIST (or GET with ?list=true) lists.
//
// Policies: each Vault path is checked as the native path it maps to, so
// one set of policies covers both APIs: transit/<op>/<key> as
// kms/<op>/<key> (transit/keys/k as kms/keys/k, transit/datakey/<type>/k
// as kms/datakey/k, transit/export/<type>/k as kms/export/k with read and
// sudo, transit/verify/k as kms/verify/k also for an HMAC), <mount>/<kind>/p
// of a KV v2 mount as secret/<mount>/<kind>/p, and auth/token/..., sys/...
// as themselves.
//
// Audit: a Vault request is audited as a native one is. Its response entry
// holds the envelope's data and those other fields that are not empty, as
// Vault's audit devices record them, hashed by the same rules; it is built
// from the values sent rather than by decoding the body again.
//
// Where custos differs from Vault: KV version 1 mounts, derived
// (context) keys, convergent encryption and batch tokens are refused with
// an error; a transit key is not created by its first encrypt; deleting a
// transit key schedules its deletion after the kms deletion window; keys
// export as the native export does (raw for symmetric keys, PKCS #8 PEM
// otherwise).

// VaultPrefix is where the Vault API is served on the native API's port.
const VaultPrefix = "/vault"

const errUnsupported = "unsupported path"

// vaultHeader carries the token in Vault's clients.
const vaultHeader = "X-Vault-Token"

// Vault's clients list with the LIST method; chi refuses methods it does
// not know.
func init() { chi.RegisterMethod("LIST") }

// isVault reports whether r came in through the Vault API.
func isVault(r *http.Request) bool {
	st := reqState(r.Context())
	return st != nil && st.vault
}

// VaultHandler serves the Vault-compatible API at /v1/..., for a listener
// of its own, behind the same middleware as the native API.
func (s *Server) VaultHandler() http.Handler {
	m := chi.NewRouter()
	m.Use(s.mux.Middlewares()...)
	m.Handle("/*", s.vaultEntry(""))
	return m
}

// vaultEntry marks a request as a Vault one, strips prefix from its path,
// turns LIST into GET with list=true, and routes it.
func (s *Server) vaultEntry(prefix string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st := reqState(r.Context()); st != nil {
			st.vault = true
		}
		u := *r.URL
		u.Path = strings.TrimPrefix(u.Path, prefix)
		u.RawPath = strings.TrimPrefix(u.RawPath, prefix)
		r2 := r.WithContext(context.WithValue(r.Context(), chi.RouteCtxKey, nil))
		r2.URL = &u
		if r2.Method == "LIST" {
			r2.Method = http.MethodGet
			q := u.Query()
			q.Set("list", "true")
			u.RawQuery = q.Encode()
		}
		s.vault.ServeHTTP(w, r2)
	})
}

func (s *Server) newVaultRouter() *chi.Mux {
	m := chi.NewRouter()
	m.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, Errorf(http.StatusNotFound, CodeNotFound, errUnsupported))
	})
	m.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, Errorf(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "unsupported operation"))
	})
	for _, rt := range s.vaultRoutes() {
		m.Method(rt.method, rt.pattern, s.wrap(rt))
		if rt.method == http.MethodPost { // Vault takes PUT as POST
			m.Method(http.MethodPut, rt.pattern, s.wrap(rt))
		}
	}
	return m
}

// VaultRoutes lists the routes of the Vault API (PUT twins of POST routes
// left out).
func (s *Server) VaultRoutes() []RouteInfo {
	var out []RouteInfo
	for _, rt := range s.vaultRoutes() {
		out = append(out, RouteInfo{Method: rt.method, Pattern: rt.pattern, Public: rt.public})
	}
	return out
}

func (s *Server) vaultRoutes() []route {
	var rs []route
	rs = append(rs, s.vaultSysRoutes()...)
	rs = append(rs, s.vaultTokenRoutes()...)
	rs = append(rs, s.vaultTransitRoutes()...)
	rs = append(rs, s.vaultKVRoutes()...)
	return rs
}

// policyAs returns a policy path function: tmpl with each {param} replaced
// by the URL parameter of that name.
func policyAs(tmpl string) func(*http.Request) string {
	return func(r *http.Request) string {
		out := tmpl
		for {
			i := strings.IndexByte(out, '{')
			j := strings.IndexByte(out, '}')
			if i < 0 || j < i {
				return out
			}
			out = out[:i] + chi.URLParam(r, out[i+1:j]) + out[j+1:]
		}
	}
}

// vaultResponse is Vault's response envelope.
type vaultResponse struct {
	RequestID     string     `json:"request_id"`
	LeaseID       string     `json:"lease_id"`
	Renewable     bool       `json:"renewable"`
	LeaseDuration int64      `json:"lease_duration"`
	Data          any        `json:"data"`
	WrapInfo      any        `json:"wrap_info"`
	Warnings      []string   `json:"warnings"`
	Auth          *vaultAuth `json:"auth"`
	MountType     string     `json:"mount_type"`
	// status, when set, replaces 200 (a batch with failed items).
	status int
}

// auditFields is the envelope as the audit log records it, built from its
// values so that the body is not decoded again: data, and the other fields
// that say something, as Vault's audit devices leave empty ones out
// (request_id is the entry's own). The audit Hasher treats these values as
// those of the decoded body: it hashes every one not allowed in clear, and
// converts any that is not a JSON type through encoding/json first.
func (v *vaultResponse) auditFields() map[string]any {
	m := make(map[string]any, 2)
	if v.Data != nil {
		m["data"] = auditValue(v.Data)
	}
	if v.LeaseID != "" {
		m["lease_id"] = v.LeaseID
	}
	if v.Renewable {
		m["renewable"] = true
	}
	if v.LeaseDuration != 0 {
		m["lease_duration"] = v.LeaseDuration
	}
	if v.WrapInfo != nil {
		m["wrap_info"] = v.WrapInfo
	}
	if len(v.Warnings) > 0 {
		m["warnings"] = v.Warnings
	}
	if v.Auth != nil {
		m["auth"] = v.Auth
	}
	if v.MountType != "" {
		m["mount_type"] = v.MountType
	}
	return m
}

// auditValue returns data in the JSON types it encodes to where that is
// cheap (a transit result), else data itself for the Hasher to convert.
func auditValue(data any) any {
	if res, ok := data.(vaultResult); ok {
		return res.auditFields()
	}
	return data
}

// vaultRaw is an answer sent as it is, without the envelope (sys/health,
// sys/seal-status, sys/leader), with its status (0: 200).
type vaultRaw struct {
	body   any
	status int
}

// envelope wraps a handler's result for the Vault API.
func envelope(r *http.Request, resp any) (any, int) {
	switch v := resp.(type) {
	case *vaultResponse:
		v.RequestID = requestID(r.Context())
		return v, v.status
	case vaultRaw:
		return v.body, v.status
	}
	return &vaultResponse{RequestID: requestID(r.Context()), Data: resp}, 0
}

// writeVaultError sends e as Vault does.
func writeVaultError(w http.ResponseWriter, e *Error) {
	status, msg := e.Status, e.Message
	switch e.Code {
	case CodeUnauthenticated, CodePermissionDenied:
		status, msg = http.StatusForbidden, "permission denied"
		if e.Code == CodePermissionDenied && e.Message != "" {
			msg = "permission denied: " + strings.TrimPrefix(e.Message, "permission denied: ")
		}
	case CodeSealed:
		msg = "Vault is sealed"
	case CodeNotInitialized:
		msg = "Vault is not initialized"
	case CodeConflict:
		status = http.StatusBadRequest // a failed check-and-set
	}
	errs := []string{msg}
	if e.Code == CodeNotFound && status == http.StatusNotFound && msg != errUnsupported {
		errs = []string{} // as Vault answers a read of nothing
	}
	writeJSON(w, status, map[string][]string{"errors": errs})
}

// Lenient scalar types of Vault request bodies: Vault's field parser takes
// a number or a string for an int, a bool or "true", a duration as seconds
// or as "1h".

// vInt is an integer given as a JSON number or string.
type vInt int64

func (v *vInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*v = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != float64(int64(f)) {
			return fmt.Errorf("want an integer")
		}
		n = int64(f)
	}
	*v = vInt(n)
	return nil
}

// vBool is a boolean given as JSON or as a string.
type vBool bool

func (v *vBool) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*v = false
		return nil
	}
	x, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want a boolean")
	}
	*v = vBool(x)
	return nil
}

// vDuration is a duration given as seconds (number or string) or as a Go
// duration string ("1h", "30m"); Vault also takes "1d".
type vDuration time.Duration

func (v *vDuration) UnmarshalJSON(b []byte) error {
	d, err := parseVaultDuration(strings.Trim(string(b), `"`))
	if err != nil {
		return err
	}
	*v = vDuration(d)
	return nil
}

func parseVaultDuration(s string) (time.Duration, error) {
	switch {
	case s == "" || s == "null":
		return 0, nil
	case strings.HasSuffix(s, "d"):
		n, err := strconv.ParseInt(strings.TrimSuffix(s, "d"), 10, 32)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("want a duration")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 && n < 1<<33 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want a duration such as 3600, \"1h\" or \"30m\"")
	}
	return d, nil
}

// vStrings is a list given as a JSON array or a comma-separated string.
type vStrings []string

func (v *vStrings) UnmarshalJSON(b []byte) error {
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		*v = list
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a list of strings")
	}
	*v = nil
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*v = append(*v, p)
		}
	}
	return nil
}

// seconds is d in whole seconds, as Vault's TTL fields are.
func seconds(d time.Duration) int64 { return int64(d / time.Second) }
