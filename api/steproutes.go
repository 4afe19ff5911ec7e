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
