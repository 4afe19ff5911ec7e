package api

import (
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/secrets"
	"github.com/go-chi/chi/v5"
)

// The Vault KV v2 routes are the native secret routes, at
// /v1/<mount>/... rather than /v1/secret/<mount>/..., checked against the
// native policy paths.
func (s *Server) vaultKVRoutes() []route {
	var rs []route
	for _, rt := range s.secretsRoutes() {
		p, found := strings.CutPrefix(rt.pattern, "/v1/secret/{mount}/")
		if !found || !strings.Contains(p, "/*") {
			continue // mounts are managed natively; read-many, move are custos'
		}
		rt.pattern = "/v1/{mount}/" + p
		rt.policy = func(r *http.Request) string {
			path := "secret/" + strings.TrimPrefix(r.URL.Path, "/v1/")
			if rt.capOf != nil && rt.capOf(r) == auth.CapList && !strings.HasSuffix(path, "/") {
				path += "/" // Vault lists "a/b" as the folder "a/b/"
			}
			return path
		}
		if rt.capOf != nil { // a listing names a folder, with or without its "/"
			h := rt.h
			rt.h = func(w http.ResponseWriter, r *http.Request) {
				if rc := chi.RouteContext(r.Context()); rc != nil && rt.capOf(r) == auth.CapList {
					for i, k := range rc.URLParams.Keys {
						if k == "*" && rc.URLParams.Values[i] != "" && !strings.HasSuffix(rc.URLParams.Values[i], "/") {
							rc.URLParams.Values[i] += "/"
						}
					}
				}
				h(w, r)
			}
		}
		rs = append(rs, rt)
	}
	return append(rs, route{method: http.MethodPatch, pattern: "/v1/{mount}/metadata/*", cap: auth.CapUpdate, op: "secret-metadata-write",
		policy: func(r *http.Request) string { return "secret/" + strings.TrimPrefix(r.URL.Path, "/v1/") },
		h:      handle(withSecrets(s, wildPath, vaultMetadataPatch))})
}

// vaultMetadataPatchRequest is PATCH <mount>/metadata/<path> (vault kv
// metadata patch): absent fields stay, custom_metadata is merged, a null
// value removing its key.
type vaultMetadataPatchRequest struct {
	MaxVersions        *vInt              `json:"max_versions"`
	CASRequired        *vBool             `json:"cas_required"`
	DeleteVersionAfter *vDuration         `json:"delete_version_after"`
	CustomMetadata     map[string]*string `json:"custom_metadata"`
}

func vaultMetadataPatch(r *http.Request, svc *Services, mount, path string, req *vaultMetadataPatchRequest) (any, error) {
	var u secrets.MetadataUpdate
	if req.MaxVersions != nil {
		u.MaxVersions = new(int(*req.MaxVersions))
	}
	if req.CASRequired != nil {
		u.CASRequired = new(bool(*req.CASRequired))
	}
	if req.DeleteVersionAfter != nil {
		u.DeleteVersionAfter = new(time.Duration(*req.DeleteVersionAfter))
	}
	if req.CustomMetadata != nil {
		md, err := svc.Secrets.ReadMetadata(r.Context(), mount, path)
		if err != nil {
			return nil, err
		}
		u.CustomMetadata = maps.Clone(md.CustomMetadata)
		if u.CustomMetadata == nil {
			u.CustomMetadata = map[string]string{}
		}
		for k, v := range req.CustomMetadata {
			if v == nil {
				delete(u.CustomMetadata, k)
			} else {
				u.CustomMetadata[k] = *v
			}
		}
	}
	_, err := svc.Secrets.PutMetadata(r.Context(), mount, path, u)
	return nil, err
}
