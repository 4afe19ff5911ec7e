package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/kms"
	"github.com/go-chi/chi/v5"
)

func (s *Server) sysRoutes() []route {
	rs := []route{
		{method: http.MethodGet, pattern: "/v1/sys/health", public: true, op: "health", h: s.health},
		{method: http.MethodHead, pattern: "/v1/sys/health", public: true, op: "health", h: s.health},
		{method: http.MethodGet, pattern: "/v1/sys/seal-status", public: true, op: "seal-status", h: handle(s.sealStatus)},
		{method: http.MethodPost, pattern: "/v1/sys/init", public: true, op: "init", h: handle(s.init)},
		{method: http.MethodPost, pattern: "/v1/sys/unseal", public: true, op: "unseal", h: handle(s.unseal)},
		{method: http.MethodPost, pattern: "/v1/sys/cluster/join", public: true, op: "join", h: handle(s.join)},
		{method: http.MethodPost, pattern: "/v1/sys/seal", cap: auth.CapUpdate | auth.CapSudo, op: "seal", h: handle(s.seal)},
		{method: http.MethodGet, pattern: "/v1/sys/key-status", cap: auth.CapRead, op: "key-status", h: handle(s.keyStatus)},
		{method: http.MethodPost, pattern: "/v1/sys/rotate", cap: auth.CapUpdate | auth.CapSudo, op: "rotate", h: handle(s.rotate)},
		{method: http.MethodGet, pattern: "/v1/sys/rotate/config", cap: auth.CapRead, op: "rotate-config-read", h: handle(s.rotationConfig)},
		{method: http.MethodPost, pattern: "/v1/sys/rotate/config", cap: auth.CapUpdate | auth.CapSudo, op: "rotate-config-write", h: handle(s.setRotationConfig)},
		{method: http.MethodPost, pattern: "/v1/sys/join-token", cap: auth.CapCreate | auth.CapSudo, op: "join-token", h: handle(s.joinToken)},
		{method: http.MethodGet, pattern: "/v1/sys/raft/peers", cap: auth.CapRead, op: "raft-peers", h: handle(s.raftPeers)},
		{method: http.MethodPost, pattern: "/v1/sys/raft/remove-peer", cap: auth.CapUpdate | auth.CapSudo, op: "remove-peer", h: handle(s.removePeer)},
		{method: http.MethodPost, pattern: "/v1/sys/raft/step-down", cap: auth.CapUpdate | auth.CapSudo, op: "step-down", h: handle(s.stepDown)},
		{method: http.MethodGet, pattern: "/v1/sys/raft/snapshot", cap: auth.CapRead | auth.CapSudo, op: "snapshot-save", raw: true, h: s.snapshotSave},
		{method: http.MethodPost, pattern: "/v1/sys/raft/snapshot", cap: auth.CapUpdate | auth.CapSudo, op: "snapshot-restore", raw: true, h: s.snapshotRestore},
	}
	// generate-root is public: a quorum of unseal shares is its proof. The
	// others need sudo as well as the shares.
	rs = append(rs, s.ceremonyRoutes(CeremonyGenerateRoot, "/v1/sys/generate-root/attempt", "/v1/sys/generate-root/update", true)...)
	rs = append(rs, s.ceremonyRoutes(CeremonyRekey, "/v1/sys/rekey/init", "/v1/sys/rekey/update", false)...)
	rs = append(rs, s.ceremonyRoutes(CeremonyRotateRoot, "/v1/sys/rotate-root/init", "/v1/sys/rotate-root/update", false)...)
	return append(rs, []route{
		{method: http.MethodGet, pattern: "/v1/sys/policies", cap: auth.CapList, op: "policy-list", h: handle(withAuth(s, policyList))},
		{method: http.MethodGet, pattern: "/v1/sys/policies/{name}", cap: auth.CapRead, op: "policy-read", h: handle(withAuth(s, policyRead))},
		{method: http.MethodPut, pattern: "/v1/sys/policies/{name}", cap: auth.CapUpdate, op: "policy-write", h: handle(withAuth(s, policyWrite))},
		{method: http.MethodPost, pattern: "/v1/sys/policies/{name}", cap: auth.CapUpdate, op: "policy-write", h: handle(withAuth(s, policyWrite))},
		{method: http.MethodDelete, pattern: "/v1/sys/policies/{name}", cap: auth.CapDelete, op: "policy-delete", h: handle(withAuth(s, policyDelete))},
	}...)
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	h := s.node.Health(r.Context())
	status := http.StatusOK
	switch {
	case !h.Initialized:
		status = http.StatusNotImplemented
	case h.Sealed:
		status = http.StatusServiceUnavailable
	case !h.HasLeader:
		status = http.StatusTooManyRequests
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, h)
}

func (s *Server) sealStatus(r *http.Request, _ *noBody) (any, error) {
	return s.node.SealStatus(r.Context())
}

func (s *Server) init(r *http.Request, req *InitRequest) (any, error) {
	// Answer an initialised cluster from this node's own state: a refused
	// init must cost no replicated write (the barrier's init would create
	// its tables and try its compare-and-swap before finding out).
	if s.node.Health(r.Context()).Initialized {
		return nil, kms.ErrAlreadyInitialized
	}
	return s.node.Init(r.Context(), *req)
}

func (s *Server) unseal(r *http.Request, req *UnsealRequest) (any, error) {
	if req.Key == "" && !req.Reset {
		return nil, invalid("key is required")
	}
	return s.node.Unseal(r.Context(), *req)
}

func (s *Server) seal(r *http.Request, _ *noBody) (any, error) {
	// Seal once the response is in the audit log: sealing closes it.
	afterResponse(r, func() {
		if err := s.node.Seal(context.WithoutCancel(r.Context())); err != nil {
			s.log.Error("seal", "error", err)
		}
	})
	return nil, nil
}

func (s *Server) joinToken(r *http.Request, req *JoinTokenRequest) (any, error) {
	return s.node.CreateJoinToken(r.Context(), *req)
}

func (s *Server) join(r *http.Request, req *JoinRequest) (any, error) {
	return s.node.Join(r.Context(), *req)
}

func (s *Server) raftPeers(r *http.Request, _ *noBody) (any, error) {
	return s.node.RaftStatus(r.Context())
}

func (s *Server) removePeer(r *http.Request, req *RemovePeerRequest) (any, error) {
	if req.NodeID == "" {
		return nil, invalid("node_id is required")
	}
	return nil, s.node.RemovePeer(r.Context(), req.NodeID)
}

func (s *Server) stepDown(r *http.Request, _ *noBody) (any, error) {
	return nil, s.node.StepDown(r.Context())
}

// Snapshots may take longer to move than the server's read and write
// timeouts allow a whole request. Their handlers push the connection's
// deadline forward as bytes move instead, so a transfer is cut only when it
// stalls for snapshotIdleTimeout.
const snapshotIdleTimeout = 2 * time.Minute

// deadlineWriter extends the write deadline before each write.
type deadlineWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	wrote bool
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(snapshotIdleTimeout))
	d.wrote = true
	return d.w.Write(p)
}

// deadlineReader extends the read deadline before each read.
type deadlineReader struct {
	r  io.Reader
	rc *http.ResponseController
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	_ = d.rc.SetReadDeadline(time.Now().Add(snapshotIdleTimeout))
	return d.r.Read(p)
}

func (s *Server) snapshotSave(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="custos.snap"`)
	dw := &deadlineWriter{w: w, rc: http.NewResponseController(w)}
	if err := s.node.SnapshotSave(r.Context(), dw); err != nil {
		if dw.wrote {
			// Part of the snapshot is out: cut the connection so that the
			// client sees a broken transfer, not a snapshot with an error
			// document at its end.
			panic(http.ErrAbortHandler)
		}
		writeError(w, r, err)
	}
}

func (s *Server) snapshotRestore(w http.ResponseWriter, r *http.Request) {
	force := false
	if v := r.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			writeError(w, r, invalid("force must be true or false"))
			return
		}
	}
	rc := http.NewResponseController(w)
	// No write deadline while the body is read and installed (a stalled
	// upload is cut by the read deadline); the answer gets a fresh one.
	_ = rc.SetWriteDeadline(time.Time{})
	err := s.node.SnapshotRestore(r.Context(), &deadlineReader{r: r.Body, rc: rc}, force)
	_ = rc.SetWriteDeadline(time.Now().Add(snapshotIdleTimeout))
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func policyList(r *http.Request, a *auth.Service, _ *noBody) (any, error) {
	names, err := a.ListPolicies(r.Context())
	if err != nil {
		return nil, err
	}
	return ListResponse{Keys: names}, nil
}

func policyRead(r *http.Request, a *auth.Service, _ *noBody) (any, error) {
	p, err := a.ReadPolicy(r.Context(), chi.URLParam(r, "name"))
	if err != nil {
		return nil, err
	}
	return PolicyResponse{Name: p.Name, Policy: p.Document}, nil
}

func policyWrite(r *http.Request, a *auth.Service, req *PolicyRequest) (any, error) {
	if len(req.Policy) == 0 {
		return nil, invalid("policy is required")
	}
	return nil, a.WritePolicy(r.Context(), chi.URLParam(r, "name"), req.Policy)
}

func policyDelete(r *http.Request, a *auth.Service, _ *noBody) (any, error) {
	return nil, a.DeletePolicy(r.Context(), chi.URLParam(r, "name"))
}

// RawPolicy is a policy document given as JSON text or as a JSON object.
type RawPolicy []byte

// MarshalJSON writes the document as a JSON object (or as a string when it
// is not JSON, for the server to refuse).
func (p RawPolicy) MarshalJSON() ([]byte, error) {
	if json.Valid(p) {
		return append([]byte(nil), p...), nil
	}
	return json.Marshal(string(p))
}

// UnmarshalJSON accepts a string holding the document or the document.
func (p *RawPolicy) UnmarshalJSON(b []byte) error {
	if t := strings.TrimSpace(string(b)); strings.HasPrefix(t, `"`) {
		var s string
		if err := jsonUnmarshal(b, &s); err != nil {
			return err
		}
		*p = RawPolicy(s)
		return nil
	}
	*p = append((*p)[:0], b...)
	return nil
}
