package api

import (
	"cmp"
	"net/http"
	"net/url"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/ca"
	"github.com/custos-pki/custos/kms"
	"github.com/go-chi/chi/v5"
)

// The one adapter between a route and the code behind it (handle), and its
// one convention: a request body decodes into Req (unless Req is noBody);
// the result is sent as 200 with the result as the body, or 204 No Content
// when the result is nil (deletes, revocations, writes that have nothing to
// say). Every error goes through writeError. The route tables (sysRoutes,
// authRoutes, kmsRoutes, caRoutes, secretsRoutes, vaultRoutes, ...) map
// paths onto it, with the service selectors below for the routes of an
// unsealed node's services. Only streams (snapshots, step-ca, the PKI
// files) and answers whose status says something (health) are written by
// hand.

// handlerFunc is what a route's code implements: it reads its URL
// parameters with chi.URLParam (decoded once, by wrap) and its body in req.
type handlerFunc[Req any] func(r *http.Request, req *Req) (any, error)

// noBody marks a handler that reads no request body: whatever is sent is
// ignored, as for a GET. A handler taking *struct{} accepts only an empty
// body or {}.
type noBody struct{}

// handle serves a route with fn.
func handle[Req any](fn handlerFunc[Req]) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if _, skip := any(&req).(*noBody); !skip {
			if err := decode(r, &req); err != nil {
				writeError(w, r, err)
				return
			}
		}
		resp, err := fn(r, &req)
		respond(w, r, resp, err)
	}
}

// respond sends a handler's result by the convention above; on the Vault
// API the body is wrapped in Vault's response envelope.
func respond(w http.ResponseWriter, r *http.Request, resp any, err error) {
	switch {
	case err != nil:
		writeError(w, r, err)
	case resp == nil:
		w.WriteHeader(http.StatusNoContent)
	case isVault(r):
		body, status := envelope(r, resp)
		if env, ok := body.(*vaultResponse); ok {
			reqState(r.Context()).auditResponse = env.auditFields()
		}
		writeJSON(w, cmp.Or(status, http.StatusOK), body)
	default:
		ok(w, resp)
	}
}

// withServices, withAuth, withKMS, withCA and withSecrets adapt handlers of
// the services of an unsealed node.
func withServices[Req any](s *Server, fn func(r *http.Request, svc *Services, req *Req) (any, error)) handlerFunc[Req] {
	return func(r *http.Request, req *Req) (any, error) {
		svc, err := s.node.Services()
		if err != nil {
			return nil, err
		}
		return fn(r, svc, req)
	}
}

func withAuth[Req any](s *Server, fn func(r *http.Request, a *auth.Service, req *Req) (any, error)) handlerFunc[Req] {
	return withServices(s, func(r *http.Request, svc *Services, req *Req) (any, error) { return fn(r, svc.Auth, req) })
}

// withKMS also finds the key name with nameOf.
func withKMS[Req any](s *Server, nameOf func(*http.Request) (string, error), fn func(r *http.Request, k *kms.KMS, name string, req *Req) (any, error)) handlerFunc[Req] {
	return withServices(s, func(r *http.Request, svc *Services, req *Req) (any, error) {
		name, err := nameOf(r)
		if err != nil {
			return nil, err
		}
		return fn(r, svc.KMS, name, req)
	})
}

func withCA[Req any](s *Server, fn func(r *http.Request, c *ca.CA, req *Req) (any, error)) handlerFunc[Req] {
	return withServices(s, func(r *http.Request, svc *Services, req *Req) (any, error) {
		if svc.CA == nil {
			return nil, errNoCA
		}
		return fn(r, svc.CA, req)
	})
}

var (
	errNoCA      = Errorf(http.StatusServiceUnavailable, CodeUnavailable, "the certificate authority is not running on this node")
	errNoSecrets = Errorf(http.StatusServiceUnavailable, CodeUnavailable, "the secret store is not running on this node")
)

// withSecrets also finds the mount ({mount}) and, with pathOf, the path.
func withSecrets[Req any](s *Server, pathOf func(*http.Request) (string, error), fn func(r *http.Request, svc *Services, mount, path string, req *Req) (any, error)) handlerFunc[Req] {
	return withServices(s, func(r *http.Request, svc *Services, req *Req) (any, error) {
		if svc.Secrets == nil {
			return nil, errNoSecrets
		}
		path, err := pathOf(r)
		if err != nil {
			return nil, err
		}
		return fn(r, svc, chi.URLParam(r, "mount"), path, req)
	})
}

// unescapeParams decodes every URL parameter of the matched route once, in
// place, so that handlers read them with chi.URLParam. chi matches the
// escaped path when there is one (RawPath), else the decoded path; a
// malformed escape is invalid.
func unescapeParams(r *http.Request) error {
	rc := chi.RouteContext(r.Context())
	if r.URL.RawPath == "" || rc == nil {
		return nil
	}
	for i, v := range rc.URLParams.Values {
		u, err := url.PathUnescape(v)
		if err != nil {
			return invalid("the path is not validly escaped")
		}
		rc.URLParams.Values[i] = u
	}
	return nil
}
