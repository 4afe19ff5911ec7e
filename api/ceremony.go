package api

import (
	"net/http"
	"time"

	"github.com/custos-pki/custos/auth"
)

// ceremonyRoutes serves one ceremony: GET (status), POST (init) and DELETE
// (cancel, with the nonce) on initPath, and POST updatePath (one share,
// with the nonce).
func (s *Server) ceremonyRoutes(kind, initPath, updatePath string, public bool) []route {
	rt := func(method, pattern, op string, c auth.Capability, h http.HandlerFunc) route {
		return route{method: method, pattern: pattern, public: public, cap: c | auth.CapSudo, op: kind + "-" + op, h: h}
	}
	return []route{
		rt(http.MethodGet, initPath, "status", auth.CapRead, func(w http.ResponseWriter, r *http.Request) {
			st, err := s.node.CeremonyStatus(r.Context(), kind)
			reply(w, r, st, err)
		}),
		rt(http.MethodPost, initPath, "init", auth.CapUpdate, func(w http.ResponseWriter, r *http.Request) {
			var req CeremonyRequest
			if err := decode(r, &req); err != nil {
				writeError(w, r, err)
				return
			}
			st, err := s.node.CeremonyInit(r.Context(), kind, req)
			reply(w, r, st, err)
		}),
		rt(http.MethodDelete, initPath, "cancel", auth.CapUpdate, func(w http.ResponseWriter, r *http.Request) {
			var req CeremonyRequest
			if err := decode(r, &req); err != nil {
				writeError(w, r, err)
				return
			}
			if req.Nonce == "" {
				writeError(w, r, invalid("nonce is required to cancel a ceremony"))
				return
			}
			if err := s.node.CeremonyCancel(r.Context(), kind, req); err != nil {
				writeError(w, r, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}),
		rt(http.MethodPost, updatePath, "update", auth.CapUpdate, func(w http.ResponseWriter, r *http.Request) {
			var req CeremonyRequest
			if err := decode(r, &req); err != nil {
				writeError(w, r, err)
				return
			}
			switch {
			case req.Nonce == "":
				writeError(w, r, invalid("nonce is required"))
				return
			case req.Key == "":
				writeError(w, r, invalid("key is required"))
				return
			}
			st, err := s.node.CeremonyUpdate(r.Context(), kind, req)
			reply(w, r, st, err)
		}),
	}
}

func reply(w http.ResponseWriter, r *http.Request, v any, err error) {
	if err != nil {
		writeError(w, r, err)
		return
	}
	ok(w, v)
}

func (s *Server) keyStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.node.KeyStatus(r.Context())
	reply(w, r, st, err)
}

func (s *Server) rotate(w http.ResponseWriter, r *http.Request) {
	if err := decode(r, &noBody{}); err != nil {
		writeError(w, r, err)
		return
	}
	st, err := s.node.RotateKeyring(r.Context())
	reply(w, r, st, err)
}

func (s *Server) rotationConfig(w http.ResponseWriter, r *http.Request) {
	c, err := s.node.RotationConfig(r.Context())
	reply(w, r, c, err)
}

func (s *Server) setRotationConfig(w http.ResponseWriter, r *http.Request) {
	var req RotationConfig
	if err := decode(r, &req); err != nil {
		writeError(w, r, err)
		return
	}
	if _, err := time.ParseDuration(req.Interval); err != nil {
		writeError(w, r, invalid("interval must be a Go duration such as 720h (0s: never by age)"))
		return
	}
	c, err := s.node.SetRotationConfig(r.Context(), req)
	reply(w, r, c, err)
}
