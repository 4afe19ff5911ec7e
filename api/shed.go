package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/custos-pki/custos/internal/clientip"
	"github.com/custos-pki/custos/internal/ratelimit"
	"github.com/prometheus/client_golang/prometheus"
)

// Limits shed load before it reaches the handlers. The zero value limits
// nothing; DefaultLimits is what a node runs with.
//
// Refusals for load are not written to the audit log: a flood must not
// fill the disk. They are counted in custos_http_shed_total.
type Limits struct {
	// MaxInFlight caps the requests this node serves at once; past it a
	// request is answered 503 with Retry-After. 0: no cap.
	MaxInFlight int
	// MaxConnections caps the open connections (see Server.Listener): a
	// connection past it is answered 503 with Retry-After and closed, and
	// one past twice it is closed unread. 0: no cap.
	MaxConnections int
	// PublicPerIP limits, per client address (IPv6 by /64), the
	// unauthenticated routes that do work: init, unseal, join, the
	// ceremonies, logins. The cheap public reads (health, seal status, CA
	// certificates, CRLs, OCSP) are not counted. A request past it gets 429
	// with Retry-After.
	PublicPerIP ratelimit.Limit
	// TrustedPeer reports whether the TLS peer of a request is a member of
	// the cluster, whose proxy may name the client address in the
	// clientip.Header. From any other peer that header is deleted unread.
	// nil: trust no one.
	TrustedPeer func(*tls.ConnectionState) bool
	// Clock drives PublicPerIP; nil: the system clock.
	Clock ratelimit.Clock
}

// DefaultLimits are a node's defaults: 512 requests in flight, 4096
// connections, and 10 unauthenticated requests a second per client address
// with bursts of 50 (an operator unsealing, a node joining and a login
// storm of one host all fit).
func DefaultLimits() Limits {
	return Limits{
		MaxInFlight:    512,
		MaxConnections: 4096,
		PublicPerIP:    ratelimit.Limit{Count: 10, Period: time.Second, Burst: 50},
	}
}

// cheapPublic are the public operations that read local or cached state
// only; every other public route counts against PublicPerIP.
var cheapPublic = map[string]bool{
	"health": true, "seal-status": true, "ca-roots": true, "ca-chain": true, "ca-issuer": true, "ca-crl": true, "ca-ocsp": true,
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// shedder applies Limits.
type shedder struct {
	inflight chan struct{} // nil: no cap
	public   *ratelimit.Limiter
	trusted  func(*tls.ConnectionState) bool
	maxConns int64
	conns    atomic.Int64
	shed     *prometheus.CounterVec
}

func newShedder(l Limits, reg *prometheus.Registry) (*shedder, error) {
	if l.MaxInFlight < 0 || l.MaxConnections < 0 {
		return nil, fmt.Errorf("api: limits: MaxInFlight and MaxConnections must not be negative")
	}
	if l.Clock == nil {
		l.Clock = systemClock{}
	}
	pub, err := ratelimit.New(l.PublicPerIP, l.Clock, 0)
	if err != nil {
		return nil, fmt.Errorf("api: limits: PublicPerIP: %w", err)
	}
	sh := &shedder{public: pub, trusted: l.TrustedPeer, maxConns: int64(l.MaxConnections)}
	if l.MaxInFlight > 0 {
		sh.inflight = make(chan struct{}, l.MaxInFlight)
	}
	sh.shed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custos_http_shed_total", Help: "Requests and connections refused for load, by reason.",
	}, []string{"reason"})
	if err := reg.Register(sh.shed); err != nil {
		return nil, fmt.Errorf("api: metrics: %w", err)
	}
	return sh, nil
}

// middleware settles the client address, then refuses what is over the
// connection and in-flight caps.
func (sh *shedder) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := sh.clientIP(r)
		r.Header.Del(clientip.Header)
		if c, ok := r.Context().(*reqContext); ok { // begin's: no context of its own
			c.st.clientIP, c.st.clientIPSet = ip.Unmap(), true
		} else {
			r = r.WithContext(clientip.NewContext(r.Context(), ip))
		}
		if overConn, _ := r.Context().Value(overConnKey{}).(bool); overConn {
			w.Header().Set("Connection", "close")
			sh.refuse(w, r, "connections", time.Second,
				Errorf(http.StatusServiceUnavailable, CodeUnavailable, "this node is at its limit of %d connections; retry", sh.maxConns))
			return
		}
		if sh.inflight != nil {
			select {
			case sh.inflight <- struct{}{}:
				defer func() { <-sh.inflight }()
			default:
				sh.refuse(w, r, "in_flight", time.Second,
					Errorf(http.StatusServiceUnavailable, CodeUnavailable, "this node is at its limit of %d requests in flight; retry", cap(sh.inflight)))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// clientIP is the TCP peer, or the address a trusted cluster member's
// proxy names.
func (sh *shedder) clientIP(r *http.Request) netip.Addr {
	if v := r.Header.Get(clientip.Header); v != "" && sh.trusted != nil && r.TLS != nil && sh.trusted(r.TLS) {
		if ip, ok := clientip.Parse(v); ok {
			return ip
		}
	}
	return clientip.Remote(r)
}

// allowPublic spends one request of the client's PublicPerIP budget for a
// public route that does work, or answers 429.
func (sh *shedder) allowPublic(w http.ResponseWriter, r *http.Request, rt route) bool {
	if cheapPublic[rt.op] {
		return true
	}
	d := sh.public.Spend(clientip.Key(clientip.Of(r)), 1)
	if d.Allowed {
		return true
	}
	sh.refuse(w, r, "public_rate", d.RetryIn,
		Errorf(http.StatusTooManyRequests, CodeRateLimited, "too many unauthenticated requests from this address; retry in %s", retrySeconds(d.RetryIn)+"s"))
	return false
}

func (sh *shedder) refuse(w http.ResponseWriter, r *http.Request, reason string, after time.Duration, e *Error) {
	sh.shed.WithLabelValues(reason).Inc()
	w.Header().Set("Retry-After", retrySeconds(after))
	writeError(w, r, e)
}

// retrySeconds is a Retry-After value: whole seconds, at least 1.
func retrySeconds(d time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}

type overConnKey struct{}

// Listener counts the connections ln accepts against MaxConnections: one
// past the cap is marked to be answered 503 and closed (see ConnContext),
// one past twice the cap is closed at once. With no cap it returns ln.
func (s *Server) Listener(ln net.Listener) net.Listener {
	if s.shed.maxConns == 0 {
		return ln
	}
	return &countingListener{Listener: ln, sh: s.shed}
}

// ConnContext is the http.Server's ConnContext: it marks the connections
// Listener found over the cap.
func (s *Server) ConnContext(ctx context.Context, c net.Conn) context.Context {
	for {
		if cc, ok := c.(*countedConn); ok {
			if cc.over {
				return context.WithValue(ctx, overConnKey{}, true)
			}
			return ctx
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return ctx
		}
		c = u.NetConn()
	}
}

type countingListener struct {
	net.Listener
	sh *shedder
}

func (l *countingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		n := l.sh.conns.Add(1)
		if n > 2*l.sh.maxConns {
			l.sh.conns.Add(-1)
			l.sh.shed.WithLabelValues("connections_closed").Inc()
			_ = c.Close()
			continue
		}
		return &countedConn{Conn: c, sh: l.sh, over: n > l.sh.maxConns}, nil
	}
}

type countedConn struct {
	net.Conn
	sh   *shedder
	over bool
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.sh.conns.Add(-1) })
	return c.Conn.Close()
}
