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
		rt(http.MethodGet, initPath, "status", auth.CapRead, handle(func(r *http.Request, _ *noBody) (any, error) {
			return s.node.CeremonyStatus(r.Context(), kind)
		})),
		rt(http.MethodPost, initPath, "init", auth.CapUpdate, handle(func(r *http.Request, req *CeremonyRequest) (any, error) {
			return s.node.CeremonyInit(r.Context(), kind, *req)
		})),
		rt(http.MethodDelete, initPath, "cancel", auth.CapUpdate, handle(func(r *http.Request, req *CeremonyRequest) (any, error) {
			if req.Nonce == "" {
				return nil, invalid("nonce is required to cancel a ceremony")
			}
			return nil, s.node.CeremonyCancel(r.Context(), kind, *req)
		})),
		rt(http.MethodPost, updatePath, "update", auth.CapUpdate, handle(func(r *http.Request, req *CeremonyRequest) (any, error) {
			switch {
			case req.Nonce == "":
				return nil, invalid("nonce is required")
			case req.Key == "":
				return nil, invalid("key is required")
			}
			return s.node.CeremonyUpdate(r.Context(), kind, *req)
		})),
	}
}

func (s *Server) keyStatus(r *http.Request, _ *noBody) (any, error) {
	return s.node.KeyStatus(r.Context())
}

func (s *Server) rotate(r *http.Request, _ *struct{}) (any, error) {
	return s.node.RotateKeyring(r.Context())
}

func (s *Server) rotationConfig(r *http.Request, _ *noBody) (any, error) {
	return s.node.RotationConfig(r.Context())
}

func (s *Server) setRotationConfig(r *http.Request, req *RotationConfig) (any, error) {
	if _, err := time.ParseDuration(req.Interval); err != nil {
		return nil, invalid("interval must be a Go duration such as 720h (0s: never by age)")
	}
	return s.node.SetRotationConfig(r.Context(), *req)
}
