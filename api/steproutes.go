package api

import (
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/custos-pki/custos/audit"
	"github.com/custos-pki/custos/auth"
)

// EABRequest is POST /v1/ca/acme/eab: a new external account binding key
// for the ACME provisioner, optionally named by a reference.
type EABRequest struct {
	Reference string `json:"reference"`
}

// EABResponse carries the key ID and the HMAC key (base64url), shown once.
type EABResponse struct {
	KeyID     string `json:"key_id"`
	HMACKey   string `json:"hmac_key"`
	Reference string `json:"reference,omitempty"`
}

func (s *Server) acmeRoutes() []route {
	return []route{{method: http.MethodPost, pattern: "/v1/ca/acme/eab", cap: auth.CapUpdate | auth.CapSudo, op: "acme-eab-create", h: s.eabCreate}}
}

func (s *Server) eabCreate(w http.ResponseWriter, r *http.Request) {
	svc, ok2 := s.services(w, r)
	if !ok2 {
		return
	}
	var req EABRequest
	if err := decode(r, &req); err != nil {
		writeError(w, r, err)
		return
	}
	if len(req.Reference) > 256 {
		writeError(w, r, invalid("reference is longer than 256 characters"))
		return
	}
	if svc.ACME == nil {
		writeError(w, r, Errorf(http.StatusNotFound, CodeNotFound, "the certificate authority is not initialised"))
		return
	}
	k, err := svc.ACME.CreateEABKey(r.Context(), req.Reference)
	if err != nil {
		writeError(w, r, err)
		return
	}
	ok(w, EABResponse{KeyID: k.KeyID, HMACKey: base64.RawURLEncoding.EncodeToString(k.HMACKey), Reference: k.Reference})
}

// stepPaths are where step-ca's handlers live: ACME under /acme/ and
// step's own API (for the step CLI) at its root paths. ACME authenticates
// itself (JWS, optional EAB), so these need no token.
var stepPaths = []string{
	"/acme/", "/1.0/", "/version", "/health", "/root/", "/sign", "/renew",
	"/rekey", "/revoke", "/provisioners", "/roots", "/roots.pem",
	"/intermediates", "/intermediates.pem", "/federation",
}

// mountStep routes step-ca's paths. ACME runs on the leader: a follower
// forwards the request there, so that one node orders each account's
// requests and owns its nonces. step's API is served on any node.
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

func (s *Server) serveStep(w http.ResponseWriter, r *http.Request, acme bool) {
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
