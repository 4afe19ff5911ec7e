package api

import (
	"context"
	"net/http"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/workload"
	"github.com/go-chi/chi/v5"
)

// WorkloadRegistry keeps the SPIFFE registration entries: *workload.Registry.
type WorkloadRegistry interface {
	Create(ctx context.Context, e workload.Entry) (workload.Entry, error)
	Get(ctx context.Context, id string) (workload.Entry, error)
	List(ctx context.Context) ([]workload.Entry, error)
	Delete(ctx context.Context, id string) error
}

// The SPIFFE registration entries, under the CA's policy paths
// (ca/workloads, ca/workloads/<id>).
func (s *Server) workloadRoutes() []route {
	get, post, del := http.MethodGet, http.MethodPost, http.MethodDelete
	return []route{
		{method: get, pattern: "/v1/ca/workloads", cap: auth.CapList, op: "ca-workload-list", h: handle(withWorkloads(s, s.workloadList))},
		{method: post, pattern: "/v1/ca/workloads", cap: auth.CapCreate, op: "ca-workload-create", h: handle(withWorkloads(s, s.workloadCreate))},
		{method: get, pattern: "/v1/ca/workloads/{id}", cap: auth.CapRead, op: "ca-workload-read", h: handle(withWorkloads(s, s.workloadRead))},
		{method: del, pattern: "/v1/ca/workloads/{id}", cap: auth.CapDelete, op: "ca-workload-delete", h: handle(withWorkloads(s, s.workloadDelete))},
	}
}

// WorkloadEntry is a registration entry, as created at POST
// /v1/ca/workloads and read back: the workloads on any node whose every
// selector holds (unix:uid:1000, unix:gid:1000, unix:user:NAME,
// unix:group:NAME, unix:path:/ABS/PATH, unix:sha256:HEX) get spiffe_id,
// issued under role. ID and created are set by the server.
type WorkloadEntry struct {
	ID        string    `json:"id,omitempty"`
	SPIFFEID  string    `json:"spiffe_id"`
	Selectors []string  `json:"selectors"`
	Role      string    `json:"role"`
	Created   time.Time `json:"created,omitzero"`
}

// WorkloadEntryList answers GET /v1/ca/workloads.
type WorkloadEntryList struct {
	Entries []WorkloadEntry `json:"entries"`
}

// withWorkloads adapts a handler of the registration entries.
func withWorkloads[Req any](s *Server, fn func(r *http.Request, reg WorkloadRegistry, req *Req) (any, error)) handlerFunc[Req] {
	return withServices(s, func(r *http.Request, svc *Services, req *Req) (any, error) {
		if svc.Workloads == nil {
			return nil, Errorf(http.StatusServiceUnavailable, CodeUnavailable, "workload registration is not running on this node")
		}
		return fn(r, svc.Workloads, req)
	})
}

func workloadOut(e workload.Entry) WorkloadEntry {
	return WorkloadEntry{ID: e.ID, SPIFFEID: e.SPIFFEID, Selectors: e.Selectors, Role: e.Role, Created: e.Created}
}

func (s *Server) workloadList(r *http.Request, reg WorkloadRegistry, _ *struct{}) (any, error) {
	es, err := reg.List(r.Context())
	if err != nil {
		return nil, err
	}
	out := WorkloadEntryList{Entries: []WorkloadEntry{}}
	for _, e := range es {
		out.Entries = append(out.Entries, workloadOut(e))
	}
	return out, nil
}

func (s *Server) workloadCreate(r *http.Request, reg WorkloadRegistry, req *WorkloadEntry) (any, error) {
	if req.ID != "" || !req.Created.IsZero() {
		return nil, invalid("id and created are set by the server")
	}
	e, err := reg.Create(r.Context(), workload.Entry{SPIFFEID: req.SPIFFEID, Selectors: req.Selectors, Role: req.Role})
	if err != nil {
		return nil, err
	}
	return workloadOut(e), nil
}

func (s *Server) workloadRead(r *http.Request, reg WorkloadRegistry, _ *struct{}) (any, error) {
	e, err := reg.Get(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		return nil, err
	}
	return workloadOut(e), nil
}

func (s *Server) workloadDelete(r *http.Request, reg WorkloadRegistry, _ *noBody) (any, error) {
	return nil, reg.Delete(r.Context(), chi.URLParam(r, "id"))
}
