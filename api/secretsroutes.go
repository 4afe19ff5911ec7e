package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/secrets"
	"github.com/go-chi/chi/v5"
)

// The secret endpoints, in Vault's KV version 2 layout. Policies match the
// URL path without "/v1/", so a rule on "secret/<mount>/data/<path>" governs
// a secret's data and one on "secret/<mount>/metadata/<path>" its metadata
// and listings. Capabilities: read to read data or metadata, list to list
// (GET metadata with list=true), update for every write (Vault's create is
// not told apart from update), delete to delete, destroy or delete the
// metadata. read-many and move also check, path by path, what reading and
// moving those secrets one by one would need.
func (s *Server) secretsRoutes() []route {
	get, put, post, patch, del := http.MethodGet, http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete
	const sec = "/v1/secret/{mount}"
	return []route{
		{method: get, pattern: "/v1/sys/mounts", cap: auth.CapList, op: "mount-list", h: handle(withSecrets(s, noPath, s.mountList))},
		{method: post, pattern: "/v1/sys/mounts/{mount}", cap: auth.CapCreate, op: "mount-create", h: handle(withSecrets(s, noPath, s.mountCreate))},
		{method: get, pattern: "/v1/sys/mounts/{mount}", cap: auth.CapRead, op: "mount-read", h: handle(withSecrets(s, noPath, s.mountRead))},
		{method: post, pattern: "/v1/sys/mounts/{mount}/tune", cap: auth.CapUpdate, op: "mount-tune", h: handle(withSecrets(s, noPath, s.mountTune))},
		{method: del, pattern: "/v1/sys/mounts/{mount}", cap: auth.CapDelete, op: "mount-delete", h: handle(withSecrets(s, noPath, s.mountDelete))},
		{method: get, pattern: sec + "/data/*", cap: auth.CapRead, op: "secret-read", h: handle(withSecrets(s, wildPath, s.secretRead))},
		{method: put, pattern: sec + "/data/*", cap: auth.CapUpdate, op: "secret-write", guarded: true, h: handle(withSecrets(s, wildPath, s.secretWrite))},
		{method: post, pattern: sec + "/data/*", cap: auth.CapUpdate, op: "secret-write", guarded: true, h: handle(withSecrets(s, wildPath, s.secretWrite))},
		{method: patch, pattern: sec + "/data/*", cap: auth.CapUpdate, op: "secret-patch", guarded: true, h: handle(withSecrets(s, wildPath, s.secretPatch))},
		{method: del, pattern: sec + "/data/*", cap: auth.CapDelete, op: "secret-delete", guarded: true, h: handle(withSecrets(s, wildPath, s.secretDeleteLatest))},
		{method: post, pattern: sec + "/delete/*", cap: auth.CapDelete, op: "secret-delete", guarded: true, h: handle(withSecrets(s, wildPath, s.secretDelete))},
		{method: post, pattern: sec + "/undelete/*", cap: auth.CapUpdate, op: "secret-undelete", guarded: true, h: handle(withSecrets(s, wildPath, s.secretUndelete))},
		{method: post, pattern: sec + "/destroy/*", cap: auth.CapDelete, op: "secret-destroy", guarded: true, h: handle(withSecrets(s, wildPath, s.secretDestroy))},
		{method: get, pattern: sec + "/metadata/*", cap: auth.CapRead, capOf: metadataCap, op: "secret-metadata-read", h: handle(withSecrets(s, rawWildPath, s.secretMetadataRead))},
		{method: put, pattern: sec + "/metadata/*", cap: auth.CapUpdate, op: "secret-metadata-write", guarded: true, h: handle(withSecrets(s, wildPath, s.secretMetadataWrite))},
		{method: post, pattern: sec + "/metadata/*", cap: auth.CapUpdate, op: "secret-metadata-write", guarded: true, h: handle(withSecrets(s, wildPath, s.secretMetadataWrite))},
		{method: del, pattern: sec + "/metadata/*", cap: auth.CapDelete, op: "secret-metadata-delete", guarded: true, h: handle(withSecrets(s, wildPath, s.secretMetadataDelete))},
		{method: post, pattern: sec + "/read-many", cap: auth.CapRead, op: "secret-read-many", h: handle(withSecrets(s, noPath, s.secretReadMany))},
		{method: post, pattern: sec + "/move", cap: auth.CapUpdate, op: "secret-move", h: handle(withSecrets(s, noPath, s.secretMove))},
	}
}

// metadataCap is list for a listing (GET metadata with list=true), else read.
func metadataCap(r *http.Request) auth.Capability {
	if list, _ := strconv.ParseBool(r.URL.Query().Get("list")); list {
		return auth.CapList
	}
	return auth.CapRead
}

// SecretMountRequest is POST /v1/sys/mounts/{mount} and .../tune; absent
// fields are the defaults, or left alone when tuning.
type SecretMountRequest struct {
	MaxVersions        *int    `json:"max_versions"`         // 0: 10
	DeleteVersionAfter *string `json:"delete_version_after"` // Go duration; "0s": never
	CASRequired        *bool   `json:"cas_required"`
}

// SecretMount describes a mount.
type SecretMount struct {
	Name               string    `json:"name"`
	CreatedTime        time.Time `json:"created_time"`
	MaxVersions        int       `json:"max_versions"`
	DeleteVersionAfter string    `json:"delete_version_after"`
	CASRequired        bool      `json:"cas_required"`
	Deleting           bool      `json:"deleting,omitempty"`
}

// SecretMountList answers GET /v1/sys/mounts.
type SecretMountList struct {
	Mounts []SecretMount `json:"mounts"`
}

// SecretWriteRequest is PUT, POST and PATCH /v1/secret/{mount}/data/{path}:
// data is a JSON object (for PATCH, an RFC 7386 merge patch); options.cas,
// when given, must be the current version (0: the secret must not exist).
type SecretWriteRequest struct {
	Data    json.RawMessage    `json:"data"`
	Options SecretWriteOptions `json:"options"`
}

// SecretWriteOptions qualify a write.
type SecretWriteOptions struct {
	CAS *int `json:"cas"`
}

// SecretVersion describes one version. DeletionTime is "" unless the
// version is deleted or scheduled to be.
type SecretVersion struct {
	Version      int       `json:"version"`
	CreatedTime  time.Time `json:"created_time"`
	DeletionTime string    `json:"deletion_time"`
	Deleted      bool      `json:"deleted"`
	Destroyed    bool      `json:"destroyed"`
}

// SecretVersionMeta is a version with its secret's custom metadata.
type SecretVersionMeta struct {
	SecretVersion
	CustomMetadata map[string]string `json:"custom_metadata"`
}

// SecretReadResponse answers GET /v1/secret/{mount}/data/{path}?version=N.
type SecretReadResponse struct {
	Data     json.RawMessage   `json:"data"`
	Metadata SecretVersionMeta `json:"metadata"`
}

// SecretVersionsRequest is POST .../delete, .../undelete and .../destroy.
type SecretVersionsRequest struct {
	Versions []int `json:"versions"`
}

// SecretMetadataRequest is PUT or POST /v1/secret/{mount}/metadata/{path};
// absent fields are left alone, custom_metadata replaces the whole map.
type SecretMetadataRequest struct {
	MaxVersions        *int              `json:"max_versions"`
	CASRequired        *bool             `json:"cas_required"`
	DeleteVersionAfter *string           `json:"delete_version_after"`
	CustomMetadata     map[string]string `json:"custom_metadata"`
}

// SecretMetadata answers GET /v1/secret/{mount}/metadata/{path}.
type SecretMetadata struct {
	CASRequired        bool                     `json:"cas_required"`
	CreatedTime        time.Time                `json:"created_time"`
	CurrentVersion     int                      `json:"current_version"`
	CustomMetadata     map[string]string        `json:"custom_metadata"`
	DeleteVersionAfter string                   `json:"delete_version_after"`
	MaxVersions        int                      `json:"max_versions"`
	OldestVersion      int                      `json:"oldest_version"`
	UpdatedTime        time.Time                `json:"updated_time"`
	Versions           map[string]SecretVersion `json:"versions"`
}

// SecretListResponse answers GET /v1/secret/{mount}/metadata/{folder}?list=true
// (&recursive=true&after=NAME&limit=N&filter=KEY=VALUE...). Names are
// relative to the folder; folders end in "/". next, when set, is the after
// of the next page.
type SecretListResponse struct {
	Keys []string `json:"keys"`
	Next string   `json:"next,omitempty"`
}

// SecretReadManyRequest is POST /v1/secret/{mount}/read-many.
type SecretReadManyRequest struct {
	Paths []string `json:"paths"`
}

// SecretReadManyResult is the current version of one path, or its error.
type SecretReadManyResult struct {
	Path     string             `json:"path"`
	Data     json.RawMessage    `json:"data,omitempty"`
	Metadata *SecretVersionMeta `json:"metadata,omitempty"`
	Error    *Error             `json:"error,omitempty"`
}

// SecretReadManyResponse holds one result per path, in order, with status
// 200 even when some failed.
type SecretReadManyResponse struct {
	Results []SecretReadManyResult `json:"results"`
}

// SecretMoveRequest is POST /v1/secret/{mount}/move.
type SecretMoveRequest struct {
	From string `json:"from"`
	To   string `json:"to"`
}

func noPath(*http.Request) (string, error) { return "", nil }

// rawWildPath is the path after data/, metadata/...: validated by the store,
// which also accepts a folder ("" or ending in "/") when listing.
func rawWildPath(r *http.Request) (string, error) { return chi.URLParam(r, "*"), nil }

// wildPath is rawWildPath for a secret's path, validated here.
func wildPath(r *http.Request) (string, error) {
	p, err := rawWildPath(r)
	if err == nil {
		err = secrets.CheckPath(p)
	}
	return p, err
}

func mountResponse(m secrets.MountInfo) SecretMount {
	return SecretMount{
		Name: m.Name, CreatedTime: m.Created, MaxVersions: m.MaxVersions,
		DeleteVersionAfter: m.DeleteVersionAfter.String(), CASRequired: m.CASRequired, Deleting: m.Deleting,
	}
}

// optDuration parses an optional duration field.
func optDuration(field string, v *string) (*time.Duration, error) {
	if v == nil {
		return nil, nil
	}
	d, err := duration(field, *v)
	return &d, err
}

func (s *Server) mountList(r *http.Request, svc *Services, _, _ string, _ *struct{}) (any, error) {
	ms, err := svc.Secrets.ListMounts(r.Context())
	if err != nil {
		return nil, err
	}
	out := SecretMountList{Mounts: make([]SecretMount, 0, len(ms))}
	for _, m := range ms {
		out.Mounts = append(out.Mounts, mountResponse(m))
	}
	return out, nil
}

func (s *Server) mountCreate(r *http.Request, svc *Services, mount, _ string, req *SecretMountRequest) (any, error) {
	dva, err := optDuration("delete_version_after", req.DeleteVersionAfter)
	if err != nil {
		return nil, err
	}
	var o secrets.MountOptions
	if req.MaxVersions != nil {
		o.MaxVersions = *req.MaxVersions
	}
	if dva != nil {
		o.DeleteVersionAfter = *dva
	}
	if req.CASRequired != nil {
		o.CASRequired = *req.CASRequired
	}
	m, err := svc.Secrets.CreateMount(r.Context(), mount, o)
	if err != nil {
		return nil, err
	}
	return mountResponse(m), nil
}

func (s *Server) mountRead(r *http.Request, svc *Services, mount, _ string, _ *struct{}) (any, error) {
	m, err := svc.Secrets.Mount(r.Context(), mount)
	if err != nil {
		return nil, err
	}
	return mountResponse(m), nil
}

func (s *Server) mountTune(r *http.Request, svc *Services, mount, _ string, req *SecretMountRequest) (any, error) {
	dva, err := optDuration("delete_version_after", req.DeleteVersionAfter)
	if err != nil {
		return nil, err
	}
	if *req == (SecretMountRequest{}) {
		return nil, invalid("give at least one setting to change")
	}
	m, err := svc.Secrets.UpdateMount(r.Context(), mount, secrets.MountUpdate{MaxVersions: req.MaxVersions, DeleteVersionAfter: dva, CASRequired: req.CASRequired})
	if err != nil {
		return nil, err
	}
	return mountResponse(m), nil
}

func (s *Server) mountDelete(r *http.Request, svc *Services, mount, _ string, _ *struct{}) (any, error) {
	force, err := boolQuery(r, "force")
	if err != nil {
		return nil, err
	}
	return nil, svc.Secrets.DeleteMount(r.Context(), mount, force)
}

func boolQuery(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalid("%s must be true or false", name)
	}
	return b, nil
}

func versionResponse(v secrets.VersionInfo) SecretVersion {
	out := SecretVersion{Version: v.Version, CreatedTime: v.Created, Deleted: v.Deleted, Destroyed: v.Destroyed}
	if !v.DeletionTime.IsZero() {
		out.DeletionTime = v.DeletionTime.Format(time.RFC3339Nano)
	}
	return out
}

func secretResponse(sec *secrets.Secret) SecretReadResponse {
	return SecretReadResponse{Data: sec.Data, Metadata: SecretVersionMeta{SecretVersion: versionResponse(sec.VersionInfo), CustomMetadata: sec.CustomMetadata}}
}

func (s *Server) secretRead(r *http.Request, svc *Services, mount, path string, _ *struct{}) (any, error) {
	n := 0
	if v := queryValue(r, "version"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			return nil, invalid("version must be a positive integer, or 0 for the current version")
		}
	}
	sec, err := svc.Secrets.Get(r.Context(), mount, path, n)
	if err != nil {
		return nil, err
	}
	return secretResponse(sec), nil
}

// queryValue is r.URL.Query().Get(key) without parsing an empty query.
func queryValue(r *http.Request, key string) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return r.URL.Query().Get(key)
}

// decodeSecretWrite checks a write request: data present, a JSON object
// within the size limit (compacted in place).
func decodeSecretWrite(req *SecretWriteRequest) (secrets.WriteOptions, error) {
	if req.Data == nil {
		return secrets.WriteOptions{}, invalid("data is required: a JSON object")
	}
	data, err := secrets.CheckData(req.Data)
	if err != nil {
		return secrets.WriteOptions{}, err
	}
	req.Data = data
	return secrets.WriteOptions{CAS: req.Options.CAS}, nil
}

func (s *Server) secretWrite(r *http.Request, svc *Services, mount, path string, req *SecretWriteRequest) (any, error) {
	o, err := decodeSecretWrite(req)
	if err != nil {
		return nil, err
	}
	v, err := svc.Secrets.Put(r.Context(), mount, path, req.Data, o)
	if err != nil {
		return nil, err
	}
	return versionResponse(v), nil
}

func (s *Server) secretPatch(r *http.Request, svc *Services, mount, path string, req *SecretWriteRequest) (any, error) {
	o, err := decodeSecretWrite(req)
	if err != nil {
		return nil, err
	}
	v, err := svc.Secrets.Patch(r.Context(), mount, path, req.Data, o)
	if err != nil {
		return nil, err
	}
	return versionResponse(v), nil
}

func (s *Server) secretDeleteLatest(r *http.Request, svc *Services, mount, path string, _ *struct{}) (any, error) {
	return nil, svc.Secrets.Delete(r.Context(), mount, path)
}

func (s *Server) secretDelete(r *http.Request, svc *Services, mount, path string, req *SecretVersionsRequest) (any, error) {
	return nil, svc.Secrets.Delete(r.Context(), mount, path, req.Versions...)
}

func (s *Server) secretUndelete(r *http.Request, svc *Services, mount, path string, req *SecretVersionsRequest) (any, error) {
	return nil, svc.Secrets.Undelete(r.Context(), mount, path, req.Versions...)
}

func (s *Server) secretDestroy(r *http.Request, svc *Services, mount, path string, req *SecretVersionsRequest) (any, error) {
	return nil, svc.Secrets.Destroy(r.Context(), mount, path, req.Versions...)
}

func (s *Server) secretMetadataRead(r *http.Request, svc *Services, mount, path string, _ *struct{}) (any, error) {
	if metadataCap(r) == auth.CapList {
		return s.secretList(r, svc, mount, path)
	}
	if err := secrets.CheckPath(path); err != nil {
		return nil, err
	}
	md, err := svc.Secrets.ReadMetadata(r.Context(), mount, path)
	if err != nil {
		return nil, err
	}
	out := SecretMetadata{
		CASRequired: md.CASRequired, CreatedTime: md.Created, CurrentVersion: md.CurrentVersion, CustomMetadata: md.CustomMetadata,
		DeleteVersionAfter: md.DeleteVersionAfter.String(), MaxVersions: md.MaxVersions, OldestVersion: md.OldestVersion,
		UpdatedTime: md.Updated, Versions: make(map[string]SecretVersion, len(md.Versions)),
	}
	for _, v := range md.Versions {
		out.Versions[strconv.Itoa(v.Version)] = versionResponse(v)
	}
	return out, nil
}

func (s *Server) secretList(r *http.Request, svc *Services, mount, folder string) (any, error) {
	q := r.URL.Query()
	recursive, err := boolQuery(r, "recursive")
	if err != nil {
		return nil, err
	}
	o := secrets.ListOptions{Recursive: recursive, After: q.Get("after")}
	if v := q.Get("limit"); v != "" {
		if o.Limit, err = strconv.Atoi(v); err != nil || o.Limit < 1 {
			return nil, invalid("limit must be a positive integer")
		}
	}
	for _, f := range q["filter"] {
		k, v, found := strings.Cut(f, "=")
		if !found || k == "" {
			return nil, invalid("filter must be KEY=VALUE")
		}
		if o.Filter == nil {
			o.Filter = map[string]string{}
		}
		o.Filter[k] = v
	}
	page, err := svc.Secrets.List(r.Context(), mount, folder, o)
	if err != nil {
		return nil, err
	}
	if page.Keys == nil {
		page.Keys = []string{}
	}
	return SecretListResponse{Keys: page.Keys, Next: page.Next}, nil
}

func (s *Server) secretMetadataWrite(r *http.Request, svc *Services, mount, path string, req *SecretMetadataRequest) (any, error) {
	dva, err := optDuration("delete_version_after", req.DeleteVersionAfter)
	if err != nil {
		return nil, err
	}
	_, err = svc.Secrets.PutMetadata(r.Context(), mount, path, secrets.MetadataUpdate{
		MaxVersions: req.MaxVersions, CASRequired: req.CASRequired, DeleteVersionAfter: dva, CustomMetadata: req.CustomMetadata,
	})
	return nil, err
}

func (s *Server) secretMetadataDelete(r *http.Request, svc *Services, mount, path string, _ *struct{}) (any, error) {
	return nil, svc.Secrets.DeleteMetadata(r.Context(), mount, path)
}

// allowedOn checks that the caller's policies grant c on a policy path.
func allowedOn(r *http.Request, svc *Services, path string, c auth.Capability) error {
	t, _ := caller(r)
	if t == nil {
		return Errorf(http.StatusForbidden, CodePermissionDenied, "permission denied: %s on %s", c, path)
	}
	ok, err := svc.Auth.Authorizer().Allowed(r.Context(), t.Policies, path, c)
	if err == nil && !ok {
		err = Errorf(http.StatusForbidden, CodePermissionDenied, "permission denied: %s on %s", c, path)
	}
	return err
}

func secretPolicyPath(mount, kind, path string) string {
	return "secret/" + mount + "/" + kind + "/" + path
}

func (s *Server) secretReadMany(r *http.Request, svc *Services, mount, _ string, req *SecretReadManyRequest) (any, error) {
	if len(req.Paths) == 0 || len(req.Paths) > secrets.MaxReadMany {
		return nil, invalid("paths: give 1 to %d paths", secrets.MaxReadMany)
	}
	out := SecretReadManyResponse{Results: make([]SecretReadManyResult, len(req.Paths))}
	var allowed []string
	var at []int
	for i, p := range req.Paths {
		out.Results[i].Path = p
		err := secrets.CheckPath(p)
		if err == nil {
			err = allowedOn(r, svc, secretPolicyPath(mount, "data", p), auth.CapRead)
		}
		if err != nil {
			out.Results[i].Error = toError(err)
			continue
		}
		allowed, at = append(allowed, p), append(at, i)
	}
	if len(allowed) == 0 {
		return out, nil
	}
	res, err := svc.Secrets.GetMany(r.Context(), mount, allowed)
	if err != nil {
		return nil, err
	}
	for j, got := range res {
		item := &out.Results[at[j]]
		if got.Err != nil {
			item.Error = toError(got.Err)
			continue
		}
		resp := secretResponse(got.Secret)
		item.Data, item.Metadata = resp.Data, &resp.Metadata
	}
	return out, nil
}

// secretMove needs what reading the source and deleting its metadata, and
// writing the destination, need.
func (s *Server) secretMove(r *http.Request, svc *Services, mount, _ string, req *SecretMoveRequest) (any, error) {
	for _, p := range []string{req.From, req.To} {
		if err := secrets.CheckPath(p); err != nil {
			return nil, err
		}
	}
	checks := []struct {
		path string
		c    auth.Capability
	}{
		{secretPolicyPath(mount, "data", req.From), auth.CapRead},
		{secretPolicyPath(mount, "metadata", req.From), auth.CapDelete},
		{secretPolicyPath(mount, "data", req.To), auth.CapUpdate},
	}
	for _, c := range checks {
		if err := allowedOn(r, svc, c.path, c.c); err != nil {
			return nil, err
		}
	}
	return nil, svc.Secrets.Move(r.Context(), mount, req.From, req.To)
}
