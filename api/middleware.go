package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/custos-pki/custos/audit"
	"github.com/custos-pki/custos/auth"
	"github.com/custos-pki/custos/internal/clientip"
	"github.com/custos-pki/custos/internal/httpstatus"
	"github.com/custos-pki/custos/raftstore"
	"github.com/custos-pki/custos/secrets"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// TokenHeader carries the client token; "Authorization: Bearer" works too.
const TokenHeader = "X-Custos-Token"

type ctxKey int

const stateKey ctxKey = iota

// reqContext is the context of a request: its state, allocated with it.
// It answers for stateKey and, once the shedder settled the address, for
// clientip's key, so that neither needs a context and a copy of the
// request of its own.
type reqContext struct {
	context.Context
	st state
}

var clientIPKey = clientip.ContextKey()

func (c *reqContext) Value(key any) any {
	switch key {
	case any(stateKey):
		return &c.st
	case clientIPKey:
		if c.st.clientIPSet {
			return c.st.clientIP
		}
	}
	return c.Context.Value(key)
}

// state is what the middleware learns about one request.
type state struct {
	id       string
	idHeader [1]string // the X-Request-Id header's value slice: id
	rec      httpstatus.Recorder
	// clientIP is the client's address as the shedder settled it
	// (clientip.NewContext), once clientIPSet.
	clientIP    netip.Addr
	clientIPSet bool
	start       time.Time
	errCode     string
	internal    error
	token       string      // the raw token; never logged
	caller      *auth.Token // nil when unauthenticated
	vault       bool        // came in through the Vault API
	after       func()      // runs once the response is audited and sent
	// auditResponse, when set, is the response body as the audit log
	// records it, handed over by the code that encoded it so that the
	// body need not be decoded again.
	auditResponse map[string]any
}

// afterResponse runs fn once the response has been audited and written:
// for changes (sealing) that would stop the audit log from recording it.
func afterResponse(r *http.Request, fn func()) {
	if st := reqState(r.Context()); st != nil {
		st.after = fn
	}
}

func reqState(ctx context.Context) *state {
	st, _ := ctx.Value(stateKey).(*state)
	return st
}

func requestID(ctx context.Context) string {
	if st := reqState(ctx); st != nil {
		return st.id
	}
	return ""
}

// caller returns the authenticated token of the request and its raw value.
func caller(r *http.Request) (*auth.Token, string) {
	if st := reqState(r.Context()); st != nil {
		return st.caller, st.token
	}
	return nil, ""
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panic", "path", r.URL.Path, "panic", fmt.Sprint(v))
				writeError(w, r, fmt.Errorf("panic"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// begin gives the request an ID and state, and records its metrics. Its
// linearizable reads share one read index (raftstore.WithReadSession): the
// first takes it, after the request began, and the others read this node's
// state, which can only have moved on since.
func (s *Server) begin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &reqContext{Context: raftstore.WithReadSession(r.Context())}
		st := &c.st
		st.id, st.start = newRequestID(), time.Now()
		st.idHeader[0] = st.id
		w.Header()["X-Request-Id"] = st.idHeader[:] // canonical; as Set, without its slice
		st.rec.ResponseWriter = w
		sw := &st.rec
		next.ServeHTTP(sw, r.WithContext(c))
		if st.internal != nil {
			s.log.Error("internal error", "request_id", st.id, "path", r.URL.Path, "error", st.internal)
		}
		pattern := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			pattern = rc.RoutePattern()
		}
		status := sw.Status
		if status == 0 {
			status = http.StatusOK
		}
		s.metrics.observe(r.Method, pattern, status, time.Since(st.start))
	})
}

// wrap applies a route's body limit, authentication, authorisation and
// audit around its handler.
func (s *Server) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := reqState(r.Context())
		defer func() {
			if st.after != nil {
				st.after()
			}
		}()
		if !rt.raw {
			r.Body = http.MaxBytesReader(w, r.Body, s.maxBody)
		}
		if err := unescapeParams(r); err != nil {
			writeError(w, r, err)
			return
		}
		if rt.public {
			if !s.shed.allowPublic(w, r, rt) {
				return
			}
			s.serveAudited(w, r, rt, nil)
			return
		}
		svc, ok := s.services(w, r)
		if !ok {
			return
		}
		tok := tokenFrom(r)
		if tok == "" {
			s.refuse(w, r, rt, svc, Errorf(http.StatusUnauthorized, CodeUnauthenticated, "a token is required (header %s)", TokenHeader))
			return
		}
		path := strings.TrimPrefix(r.URL.Path, "/v1/")
		if rt.policy != nil {
			path = rt.policy(r)
		}
		need := rt.cap
		if rt.capOf != nil {
			need = rt.capOf(r)
		}
		if rt.guarded && !rt.anyToken {
			// A write allowed by this node's state, perhaps behind, is
			// proved at its commit by its transaction (secrets.WithGuard);
			// anything this state does not allow is decided below.
			if t, ops, ok := svc.Auth.AuthorizeLocal(r.Context(), tok, path, need); ok {
				st.token, st.caller = tok, t
				g := &writeGuard{auth: svc.Auth, token: tok, path: path, need: need, ops: ops}
				s.serveAudited(w, r.WithContext(secrets.WithGuard(r.Context(), g)), rt, svc)
				return
			}
		}
		t, err := svc.Auth.Authenticate(r.Context(), tok)
		if err != nil {
			s.refuse(w, r, rt, svc, err)
			return
		}
		st.token, st.caller = tok, t
		if rt.anyToken {
			s.serveAudited(w, r, rt, svc)
			return
		}
		if err := authorize(r.Context(), svc.Auth, t, path, need); err != nil {
			s.refuse(w, r, rt, svc, err)
			return
		}
		s.serveAudited(w, r, rt, svc)
	})
}

// authorize returns nil if t's policies grant need on path, else the error
// to answer.
func authorize(ctx context.Context, a *auth.Service, t *auth.Token, path string, need auth.Capability) error {
	allowed, err := a.Authorizer().Allowed(ctx, t.Policies, path, need)
	if err != nil {
		return err
	}
	if !allowed {
		return denied(need, path)
	}
	return nil
}

func denied(need auth.Capability, path string) error {
	return Errorf(http.StatusForbidden, CodePermissionDenied, "permission denied: %s on %s", need, path)
}

// writeGuard is the authorisation of a guarded route's request, decided
// from this node's state by AuthorizeLocal: the token's record and the
// policy version it was decided from, which the write's transaction
// compares at its commit.
type writeGuard struct {
	auth  *auth.Service
	token string
	path  string
	need  auth.Capability
	ops   []raftstore.Op
}

var _ secrets.Guard = (*writeGuard)(nil)

func (g *writeGuard) Ops() []raftstore.Op { return g.ops }

// Confirm decides as an unguarded request is decided, on current state: a
// linearizable Authenticate, then Allowed. The local decision that follows
// reads that state, and gives the new guard.
func (g *writeGuard) Confirm(ctx context.Context) error {
	t, err := g.auth.Authenticate(ctx, g.token)
	if err != nil {
		return err
	}
	if err := authorize(ctx, g.auth, t, g.path, g.need); err != nil {
		return err
	}
	_, ops, ok := g.auth.AuthorizeLocal(ctx, g.token, g.path, g.need)
	if !ok { // changed again since the linearizable read
		return denied(g.need, g.path)
	}
	g.ops = ops
	return nil
}

func tokenFrom(r *http.Request) string {
	if t := r.Header.Get(TokenHeader); t != "" {
		return t
	}
	if t := r.Header.Get(vaultHeader); t != "" && isVault(r) {
		return t
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// refuse answers a request that failed authentication or authorisation,
// and audits the refusal.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, rt route, svc *Services, err error) {
	e := toError(err)
	if svc != nil && svc.Audit != nil {
		entry := s.entry(r, rt, audit.TypeResponse)
		entry.Status, entry.ErrorCode = e.Status, e.Code
		if lerr := svc.Audit.Log(entry); lerr != nil {
			writeError(w, r, fmt.Errorf("audit log: %w", lerr))
			return
		}
	}
	writeError(w, r, e)
}

func (s *Server) entry(r *http.Request, rt route, typ string) *audit.Entry {
	st := reqState(r.Context())
	ea := new(struct { // the entry and its caller in one allocation
		e audit.Entry
		a audit.Auth
	})
	e := &ea.e
	*e = audit.Entry{
		Type: typ, RequestID: st.id, RemoteAddr: r.RemoteAddr,
		Method: r.Method, Path: r.URL.Path, Operation: rt.op,
	}
	if st.caller != nil {
		ea.a = audit.Auth{Accessor: st.caller.Accessor, DisplayName: st.caller.DisplayName, Policies: st.caller.Policies, Meta: st.caller.Meta}
		e.Auth = &ea.a
	}
	return e
}

// bufferedWriter holds a response until it has been audited.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }
func (b *bufferedWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}
func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// adopt is Write(p) for a p the caller gives up: the first write takes it
// as the body without a copy.
func (b *bufferedWriter) adopt(p []byte) {
	if b.body.Len() > 0 {
		_, _ = b.Write(p)
		return
	}
	if b.status == 0 {
		b.status = http.StatusOK
	}
	b.body = *bytes.NewBuffer(p)
}

// serveAudited runs the handler between a request and a response entry in
// the audit log. With no audit log (a sealed node) it just runs it.
func (s *Server) serveAudited(w http.ResponseWriter, r *http.Request, rt route, svc *Services) {
	if svc == nil {
		if got, err := s.node.Services(); err == nil {
			svc = got
		}
	}
	if svc == nil || svc.Audit == nil || rt.raw {
		if svc != nil && svc.Audit != nil { // raw: audit the call, not the stream
			if err := svc.Audit.Log(s.entry(r, rt, audit.TypeRequest)); err != nil {
				writeError(w, r, fmt.Errorf("audit log: %w", err))
				return
			}
		}
		rt.h(w, r)
		return
	}
	body, err := readBody(r, s.maxBody)
	if err != nil {
		writeError(w, r, decodeError(err))
		return
	}
	if len(body) == 0 {
		r.Body = http.NoBody // decode skips it
	} else {
		r.Body = newAuditedBody(body)
	}
	e := s.entry(r, rt, audit.TypeRequest)
	e.Request = jsonObject(body)
	if err := svc.Audit.Log(e); err != nil {
		writeError(w, r, fmt.Errorf("audit log: %w", err))
		return
	}
	bw := &bufferedWriter{header: w.Header()}
	rt.h(bw, r)
	// The response entry is the request's, changed (Log keeps neither):
	// the caller is the one the request entry named.
	st := reqState(r.Context())
	resp := e
	resp.Type, resp.Request = audit.TypeResponse, nil
	resp.Status = bw.status
	resp.ErrorCode = st.errCode
	resp.Latency = time.Since(st.start)
	switch {
	case st.auditResponse != nil:
		resp.Response = st.auditResponse
	case strings.HasPrefix(w.Header().Get("Content-Type"), "application/json"):
		resp.Response = jsonObject(bw.body.Bytes())
	}
	if err := svc.Audit.Log(resp); err != nil {
		for k := range w.Header() {
			delete(w.Header(), k)
		}
		writeError(w, r, fmt.Errorf("audit log: %w", err))
		return
	}
	if bw.status == 0 {
		bw.status = http.StatusOK
	}
	w.WriteHeader(bw.status)
	_, _ = w.Write(bw.body.Bytes())
}

// readBody reads the whole request body, into a buffer of its declared
// length when it declares one (within limit, which the body's reader
// enforces), else growing as io.ReadAll does.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	n := r.ContentLength
	if n == 0 { // a server request with no body (its Body is http.NoBody)
		return nil, nil
	}
	if n < 0 || n > limit {
		return io.ReadAll(r.Body)
	}
	buf := bytes.NewBuffer(make([]byte, 0, n+bytes.MinRead))
	_, err := buf.ReadFrom(r.Body)
	return buf.Bytes(), err
}

type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	// series caches the metrics of each route, method and status seen,
	// saving the label lookups of every request; bounded by maxSeries,
	// beyond which they are looked up each time.
	mu     sync.RWMutex
	series map[seriesKey]series
}

type seriesKey struct {
	route, method string
	status        int
}

type series struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

const maxSeries = 1024

func newHTTPMetrics(reg *prometheus.Registry) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "custos_http_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "custos_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route", "method"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: metrics: %w", err)
		}
	}
	return m, nil
}

func (m *httpMetrics) observe(method, route string, status int, d time.Duration) {
	k := seriesKey{route, method, status}
	m.mu.RLock()
	s, ok := m.series[k]
	m.mu.RUnlock()
	if !ok {
		s = series{
			requests: m.requests.WithLabelValues(route, method, strconv.Itoa(status)),
			latency:  m.latency.WithLabelValues(route, method),
		}
		m.mu.Lock()
		if m.series == nil {
			m.series = map[seriesKey]series{}
		}
		if len(m.series) < maxSeries {
			m.series[k] = s
		}
		m.mu.Unlock()
	}
	s.requests.Inc()
	s.latency.Observe(d.Seconds())
}
